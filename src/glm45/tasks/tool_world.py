"""A deterministic fake world and the tools that act on it.

Every tool is a Python function over fixed tables (weather, exchange rates, stocks, contacts,
...) plus a small mutable ``World`` (alarms, to-dos, sent mail, texts, calendar events), so a
call's result depends only on its arguments and the calls before it in the same world. Each
tool has an OpenAI-format schema; ``execute_call`` checks arguments against it before running.
"""

from __future__ import annotations

import ast
import copy
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from glm45.tasks.tool_schema import ToolCallError, check_object, parse_arguments

# --- fixed tables --------------------------------------------------------------------------

# city -> (condition, temperature in Celsius, humidity %, latitude, longitude)
CITIES: dict[str, tuple[str, int, int, float, float]] = {
    "Paris": ("cloudy", 8, 81, 48.8566, 2.3522),
    "London": ("rainy", 7, 88, 51.5074, -0.1278),
    "Tokyo": ("sunny", 10, 45, 35.6762, 139.6503),
    "Berlin": ("snowy", -2, 79, 52.5200, 13.4050),
    "Madrid": ("sunny", 12, 50, 40.4168, -3.7038),
    "Rome": ("cloudy", 13, 70, 41.9028, 12.4964),
    "Cairo": ("sunny", 21, 40, 30.0444, 31.2357),
    "Sydney": ("sunny", 27, 60, -33.8688, 151.2093),
    "Toronto": ("snowy", -6, 72, 43.6532, -79.3832),
    "Mumbai": ("hazy", 30, 58, 19.0760, 72.8777),
    "Beijing": ("windy", 1, 30, 39.9042, 116.4074),
    "Seoul": ("cloudy", -1, 55, 37.5665, 126.9780),
    "Lima": ("foggy", 24, 77, -12.0464, -77.0428),
    "Oslo": ("snowy", -5, 85, 59.9139, 10.7522),
    "Nairobi": ("rainy", 22, 68, -1.2921, 36.8219),
    "Dublin": ("rainy", 6, 90, 53.3498, -6.2603),
    "Vienna": ("foggy", 2, 83, 48.2082, 16.3738),
    "Lisbon": ("windy", 14, 74, 38.7223, -9.1393),
    "Athens": ("sunny", 15, 62, 37.9838, 23.7275),
    "New York": ("cloudy", 3, 64, 40.7128, -74.0060),
}

# units of each currency per US dollar
RATES: dict[str, float] = {
    "USD": 1.0, "EUR": 0.92, "GBP": 0.79, "JPY": 151.0, "CNY": 7.2,
    "INR": 83.0, "CAD": 1.36, "AUD": 1.52, "CHF": 0.88,
}

# fictional tickers, prices in USD
STOCKS: dict[str, float] = {
    "ACME": 123.45, "GLBX": 87.10, "INIT": 42.00, "STRK": 310.25, "UMBR": 15.60,
    "WAYN": 205.75, "SOYL": 9.80, "CYBD": 66.40, "OSCP": 142.30, "TYRL": 58.90,
}

CONTACTS: list[dict[str, str]] = [
    {"name": "Alice Chen", "email": "alice.chen@example.com", "phone": "+1-555-0101"},
    {"name": "Bob Martin", "email": "bob.martin@example.com", "phone": "+1-555-0102"},
    {"name": "Carol Davis", "email": "carol.davis@example.com", "phone": "+1-555-0103"},
    {"name": "David Kim", "email": "david.kim@example.com", "phone": "+1-555-0104"},
    {"name": "Emma Wilson", "email": "emma.wilson@example.com", "phone": "+1-555-0105"},
    {"name": "Frank Lopez", "email": "frank.lopez@example.com", "phone": "+1-555-0106"},
    {"name": "Grace Lee", "email": "grace.lee@example.com", "phone": "+1-555-0107"},
    {"name": "Henry Brown", "email": "henry.brown@example.com", "phone": "+1-555-0108"},
    {"name": "Irene Novak", "email": "irene.novak@example.com", "phone": "+1-555-0109"},
    {"name": "Jack Taylor", "email": "jack.taylor@example.com", "phone": "+1-555-0110"},
    {"name": "Karen Singh", "email": "karen.singh@example.com", "phone": "+1-555-0111"},
    {"name": "Leo Rossi", "email": "leo.rossi@example.com", "phone": "+1-555-0112"},
]

# The world's clock: every get_time answers relative to this instant (offsets valid in January).
NOW_UTC = datetime(2025, 1, 15, 14, 5)
TIMEZONES: dict[str, int] = {  # name -> UTC offset in minutes
    "UTC": 0, "Europe/London": 0, "Europe/Paris": 60, "Europe/Berlin": 60, "Africa/Cairo": 120,
    "Asia/Kolkata": 330, "Asia/Shanghai": 480, "Asia/Tokyo": 540, "Australia/Sydney": 660,
    "America/New_York": -300, "America/Toronto": -300, "America/Lima": -300,
}
CITY_TIMEZONE: dict[str, str] = {
    "London": "Europe/London", "Paris": "Europe/Paris", "Berlin": "Europe/Berlin", "Cairo": "Africa/Cairo",
    "Mumbai": "Asia/Kolkata", "Beijing": "Asia/Shanghai", "Tokyo": "Asia/Tokyo", "Sydney": "Australia/Sydney",
    "New York": "America/New_York", "Toronto": "America/Toronto", "Lima": "America/Lima",
}

LANGUAGES = ("French", "Spanish", "German", "Italian")
TRANSLATIONS: dict[str, tuple[str, str, str, str]] = {
    "hello": ("bonjour", "hola", "hallo", "ciao"),
    "thank you": ("merci", "gracias", "danke", "grazie"),
    "water": ("eau", "agua", "Wasser", "acqua"),
    "bread": ("pain", "pan", "Brot", "pane"),
    "cat": ("chat", "gato", "Katze", "gatto"),
    "dog": ("chien", "perro", "Hund", "cane"),
    "house": ("maison", "casa", "Haus", "casa"),
    "book": ("livre", "libro", "Buch", "libro"),
    "friend": ("ami", "amigo", "Freund", "amico"),
    "apple": ("pomme", "manzana", "Apfel", "mela"),
    "good night": ("bonne nuit", "buenas noches", "gute Nacht", "buona notte"),
    "sun": ("soleil", "sol", "Sonne", "sole"),
    "moon": ("lune", "luna", "Mond", "luna"),
    "tree": ("arbre", "árbol", "Baum", "albero"),
    "car": ("voiture", "coche", "Auto", "macchina"),
}

CUISINES = ("italian", "japanese", "indian", "mexican", "french")
_RESTAURANTS: dict[str, tuple[str, ...]] = {
    "italian": ("Trattoria Sole", "Pasta Via", "Il Forno", "Casa Bella", "Nonna Rosa"),
    "japanese": ("Sakura House", "Umi Sushi", "Ramen Ichi", "Kaze Grill", "Hana Bento"),
    "indian": ("Spice Route", "Masala Corner", "Tandoor Star", "Curry Leaf", "Saffron Hall"),
    "mexican": ("Casa Verde", "El Sol Taqueria", "Salsa Roja", "La Milpa", "Taco Loco"),
    "french": ("Le Petit Bistro", "Chez Marcel", "La Belle Table", "Cafe Lumiere", "Le Jardin"),
}

_TIME_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
_DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


# --- the mutable world ---------------------------------------------------------------------


@dataclass
class World:
    """State the stateful tools change, plus a log of every executed call."""

    alarms: list[dict] = field(default_factory=list)
    todos: list[dict] = field(default_factory=list)
    emails: list[dict] = field(default_factory=list)
    texts: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    log: list[dict] = field(default_factory=list)

    def snapshot(self) -> dict[str, list[dict]]:
        """The state (not the log), for comparing a world with the expected one."""
        return copy.deepcopy({k: getattr(self, k) for k in ("alarms", "todos", "emails", "texts", "events")})

    def call(self, name: str, arguments: dict | str) -> dict:
        return execute_call(name, arguments, self)


# --- tool functions ------------------------------------------------------------------------


def _find_city(city: str) -> str | None:
    return next((c for c in CITIES if c.casefold() == city.strip().casefold()), None)


def get_weather(w: World, city: str, unit: str = "celsius") -> dict:
    name = _find_city(city)
    if name is None:
        return {"error": f"no weather data for {city!r}"}
    condition, temp_c, humidity = CITIES[name][:3]
    temp = temp_c if unit == "celsius" else round(temp_c * 9 / 5 + 32)
    return {"city": name, "condition": condition, "temperature": temp, "unit": unit, "humidity": humidity}


def convert_currency(w: World, amount: float, from_currency: str, to_currency: str) -> dict:
    result = round(amount / RATES[from_currency] * RATES[to_currency], 2)
    return {"amount": amount, "from_currency": from_currency, "to_currency": to_currency, "result": result}


_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}


def _arith(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _arith(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _arith(node.left), _arith(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise ValueError("exponent too large")
        return _BINOPS[type(node.op)](left, right)
    raise ValueError("only numbers, + - * / // % ** and parentheses are allowed")


def calculator(w: World, expression: str) -> dict:
    try:
        value = _arith(ast.parse(expression, mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError) as e:
        return {"expression": expression, "error": f"cannot evaluate: {e}"}
    if isinstance(value, float):
        value = int(value) if value.is_integer() else round(value, 4)
    return {"expression": expression, "result": value}


def lookup_stock(w: World, symbol: str) -> dict:
    sym = symbol.strip().upper()
    if sym not in STOCKS:
        return {"error": f"unknown stock symbol {symbol!r}"}
    return {"symbol": sym, "price": STOCKS[sym], "currency": "USD"}


def set_alarm(w: World, time: str, label: str = "") -> dict:
    alarm = {"alarm_id": f"alarm-{len(w.alarms) + 1}", "time": time, "label": label}
    w.alarms.append(alarm)
    return {"status": "set", **alarm}


def search_contacts(w: World, name: str) -> dict:
    q = name.strip().casefold()
    return {"matches": [dict(c) for c in CONTACTS if q and q in c["name"].casefold()]}


def send_email(w: World, to: str, subject: str, body: str) -> dict:
    mail = {"message_id": f"email-{len(w.emails) + 1}", "to": to, "subject": subject, "body": body}
    w.emails.append(mail)
    return {"status": "sent", "message_id": mail["message_id"], "to": to}


def send_text(w: World, phone: str, message: str) -> dict:
    text = {"message_id": f"text-{len(w.texts) + 1}", "phone": phone, "message": message}
    w.texts.append(text)
    return {"status": "sent", "message_id": text["message_id"], "phone": phone}


def get_time(w: World, timezone: str) -> dict:
    local = NOW_UTC + timedelta(minutes=TIMEZONES[timezone])
    return {"timezone": timezone, "date": local.strftime("%Y-%m-%d"), "time": local.strftime("%H:%M")}


def add_todo(w: World, item: str, priority: int) -> dict:
    todo = {"todo_id": f"todo-{len(w.todos) + 1}", "item": item, "priority": priority}
    w.todos.append(todo)
    return {"status": "added", **todo}


def get_distance(w: World, origin: str, destination: str, unit: str = "km") -> dict:
    a, b = _find_city(origin), _find_city(destination)
    if a is None or b is None:
        return {"error": f"unknown city {origin if a is None else destination!r}"}
    (lat1, lon1), (lat2, lon2) = (map(math.radians, CITIES[c][3:]) for c in (a, b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    km = 2 * 6371 * math.asin(math.sqrt(h))
    dist = round(km if unit == "km" else km * 0.621371)
    return {"origin": a, "destination": b, "distance": dist, "unit": unit}


def translate_word(w: World, word: str, target_language: str) -> dict:
    key = " ".join(word.split()).casefold()
    if key not in TRANSLATIONS:
        return {"error": f"no translation for {word!r}"}
    return {"word": key, "language": target_language,
            "translation": TRANSLATIONS[key][LANGUAGES.index(target_language)]}


def find_restaurant(w: World, city: str, cuisine: str) -> dict:
    name = _find_city(city)
    if name is None:
        return {"error": f"no restaurants known in {city!r}"}
    ci, ki = list(CITIES).index(name), CUISINES.index(cuisine)
    return {"city": name, "cuisine": cuisine, "name": _RESTAURANTS[cuisine][(7 * ci + 3 * ki) % 5],
            "rating": 3.5 + (ci + ki) % 15 / 10}


def create_event(w: World, title: str, date: str, time: str = "") -> dict:
    try:
        datetime.strptime(date, "%Y-%m-%d")
    except ValueError:
        return {"error": f"{date!r} is not a calendar date"}
    event = {"event_id": f"event-{len(w.events) + 1}", "title": title, "date": date, "time": time}
    w.events.append(event)
    return {"status": "created", **event}


# --- registry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict  # JSON schema of the arguments object
    fn: Callable[..., dict]

    def schema(self) -> dict:
        """The OpenAI tool definition."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


def _params(required: list[str], **props: dict) -> dict:
    return {"type": "object", "properties": props, "required": required}


_S = {"type": "string"}
REGISTRY: dict[str, Tool] = {t.name: t for t in [
    Tool("get_weather", "Get the current weather in a city.", _params(
        ["city"], city={**_S, "description": "City name, e.g. Paris"},
        unit={"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"}), get_weather),
    Tool("convert_currency", "Convert an amount of money from one currency to another.", _params(
        ["amount", "from_currency", "to_currency"], amount={"type": "number", "minimum": 0},
        from_currency={"type": "string", "enum": list(RATES)},
        to_currency={"type": "string", "enum": list(RATES)}), convert_currency),
    Tool("calculator", "Evaluate an arithmetic expression.", _params(
        ["expression"], expression={**_S, "description": "e.g. 12 * (3 + 4)"}), calculator),
    Tool("lookup_stock", "Get the latest price of a stock by its ticker symbol.", _params(
        ["symbol"], symbol={**_S, "description": "Ticker symbol, e.g. ACME"}), lookup_stock),
    Tool("set_alarm", "Set an alarm at a time of day.", _params(
        ["time"], time={**_S, "pattern": _TIME_PATTERN, "description": "24-hour HH:MM"},
        label={**_S, "default": ""}), set_alarm),
    Tool("search_contacts", "Find contacts by name; returns their email and phone.", _params(
        ["name"], name=_S), search_contacts),
    Tool("send_email", "Send an email.", _params(
        ["to", "subject", "body"], to={**_S, "pattern": r"^[^@\s]+@[^@\s]+\.[a-z]+$"},
        subject=_S, body=_S), send_email),
    Tool("send_text", "Send a text message to a phone number.", _params(
        ["phone", "message"], phone={**_S, "pattern": r"^\+?[0-9][0-9 -]{5,18}$"}, message=_S), send_text),
    Tool("get_time", "Get the current local date and time in a timezone.", _params(
        ["timezone"], timezone={"type": "string", "enum": list(TIMEZONES)}), get_time),
    Tool("add_todo", "Add an item to the to-do list.", _params(
        ["item", "priority"], item=_S,
        priority={"type": "integer", "minimum": 1, "maximum": 5, "description": "1 (low) to 5 (urgent)"}), add_todo),
    Tool("get_distance", "Get the straight-line distance between two cities.", _params(
        ["origin", "destination"], origin=_S, destination=_S,
        unit={"type": "string", "enum": ["km", "miles"], "default": "km"}), get_distance),
    Tool("translate_word", "Translate a word or short phrase from English.", _params(
        ["word", "target_language"], word=_S,
        target_language={"type": "string", "enum": list(LANGUAGES)}), translate_word),
    Tool("find_restaurant", "Find the best-rated restaurant of a cuisine in a city.", _params(
        ["city", "cuisine"], city=_S, cuisine={"type": "string", "enum": list(CUISINES)}), find_restaurant),
    Tool("create_event", "Add an event to the calendar.", _params(
        ["title", "date"], title=_S, date={**_S, "pattern": _DATE_PATTERN, "description": "YYYY-MM-DD"},
        time={**_S, "pattern": _TIME_PATTERN + "|^$", "default": ""}), create_event),
]}


def tool_schemas(names: list[str] | None = None) -> list[dict]:
    """OpenAI tool definitions for ``names`` (all tools when None), in the order given."""
    names = list(REGISTRY) if names is None else names
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ToolCallError(f"unknown tools {unknown}; known: {sorted(REGISTRY)}")
    return [REGISTRY[n].schema() for n in names]


def execute_call(name: str, arguments: dict | str, world: World | None = None, *, strict: bool = True) -> dict:
    """Run a tool in ``world`` (a fresh one when None) and return its JSON-able result.

    Arguments are checked against the tool's schema first. A call that cannot run (unknown
    tool, bad JSON, missing/unknown/mistyped arguments) raises ``ToolCallError`` when
    ``strict``, else returns ``{"error": message}`` as a tool would. Valid arguments that name
    something the world does not know (a city without data) give an ``{"error": ...}`` result.
    """
    try:
        if name not in REGISTRY:
            raise ToolCallError(f"unknown tool {name!r}; known: {sorted(REGISTRY)}")
        tool = REGISTRY[name]
        args = parse_arguments(arguments)
        problems = check_object(args, tool.parameters, name)
        if problems:
            raise ToolCallError(f"bad arguments for {name}: " + "; ".join(problems))
    except ToolCallError as e:
        if strict:
            raise
        return {"error": str(e)}
    world = World() if world is None else world
    world.log.append({"name": name, "arguments": copy.deepcopy(args)})
    return tool.fn(world, **args)
