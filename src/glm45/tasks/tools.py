"""Tool-calling tasks over the fake world in ``glm45.tasks.tool_world``.

Kinds (``generate_tool_tasks(kinds=...)``):

- ``single``: one request, one correct call.
- ``multi``: two chained calls, the second using the first's result (find a contact's email,
  then send the mail).
- ``parallel``: two independent calls in the same assistant turn (weather in two cities).
- ``irrelevant``: no offered tool fits; the ground truth is no call and a plain answer.
- ``multiturn``: the first message omits a required argument; the reference assistant asks,
  and ``UserSimulator`` (``glm45.tasks.user_sim``) supplies it when asked.

Each ``ToolTask`` holds the tools offered (needed ones plus distractors, OpenAI format), the
user request, the ground-truth calls per assistant turn with their results, and the final
answer; ``reference_messages`` renders the whole trajectory as OpenAI-style messages.

Splits follow ``glm45.tasks.common`` with the user's side of the dialogue as the key (the
request, plus the follow-up replies for ``multiturn``), so train and test never share one.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta

from glm45.tasks.common import TaskError, sample, task_id
from glm45.tasks.tool_schema import ToolCallError, normalize_call, normalize_value, validate_call
from glm45.tasks.tool_world import (
    CITIES, CITY_TIMEZONE, CONTACTS, CUISINES, LANGUAGES, RATES, REGISTRY, STOCKS, TRANSLATIONS, World,
    execute_call, tool_schemas,
)

KINDS = ("single", "multi", "parallel", "irrelevant", "multiturn")
DEFAULT_KINDS = ("single", "multi", "irrelevant")

__all__ = [
    "KINDS", "DEFAULT_KINDS", "ToolTask", "generate_tool_tasks", "score_calls", "execute_call", "validate_call",
    "tool_schemas", "World", "ToolCallError",
]


@dataclass
class ToolTask:
    id: str
    kind: str
    user: str  # the first user message
    tools: list[dict]  # offered tools, OpenAI format
    steps: list[list[dict]]  # ground-truth calls per assistant turn: {"name", "arguments"}
    results: list[list[dict]]  # the tool results of those calls, same shape
    answer: str  # the final assistant answer
    thoughts: list[str]  # reasoning for each reference assistant turn, in order
    clarification: str = ""  # multiturn: the assistant's question for the missing information
    followups: list[dict] = field(default_factory=list)  # multiturn: {"keywords": [...], "reply": str}
    split: str = "train"

    @property
    def calls(self) -> list[dict]:
        return [c for step in self.steps for c in step]

    def to_dict(self) -> dict:
        """Plain JSON-able dict; ``ToolTask(**d)`` rebuilds the task."""
        return asdict(self)

    def reference_messages(self, thinking: bool = True) -> list[dict]:
        """The reference trajectory as OpenAI-style messages (after the tools, which go to
        the chat template separately): user, [clarifying question, user reply], one assistant
        turn with ``tool_calls`` plus its ``tool`` results per step, final assistant answer."""
        thoughts = iter(self.thoughts)

        def assistant(content: str, **extra) -> dict:
            msg: dict = {"role": "assistant"}
            thought = next(thoughts)
            if thinking:
                msg["reasoning_content"] = thought
            msg["content"] = content
            msg.update(extra)
            return msg

        messages: list[dict] = [{"role": "user", "content": self.user}]
        if self.clarification:
            messages.append(assistant(self.clarification))
            messages.append({"role": "user", "content": " ".join(f["reply"] for f in self.followups)})
        n = 0
        for calls, results in zip(self.steps, self.results):
            ids = [f"call_{n + j}" for j in range(len(calls))]
            n += len(calls)
            tool_calls = [{"id": i, "type": "function",
                           "function": {"name": c["name"], "arguments": dict(c["arguments"])}}
                          for i, c in zip(ids, calls)]
            messages.append(assistant("", tool_calls=tool_calls))
            messages += [{"role": "tool", "tool_call_id": i, "content": json.dumps(r, ensure_ascii=False)}
                         for i, r in zip(ids, results)]
        messages.append(assistant(self.answer))
        return messages

    def expected_world(self) -> World:
        """The world after the ground-truth calls."""
        world = World()
        for call in self.calls:
            execute_call(call["name"], call["arguments"], world)
        return world

    def is_completed(self, world: World) -> bool:
        """Whether ``world`` (after a rollout) reaches the task's goal: the same state as the
        reference for tasks that change state; every needed lookup made for read-only ones;
        no call at all for irrelevant ones. Strings compare case- and whitespace-folded."""
        if self.kind == "irrelevant":
            return not world.log
        expected = self.expected_world().snapshot()
        if any(expected.values()):
            return normalize_value(world.snapshot()) == normalize_value(expected)
        done = [normalize_call(c, self.tools) for c in world.log]
        return all(normalize_call(c, self.tools) in done for c in self.calls)


# --- scoring -------------------------------------------------------------------------------


def score_calls(predicted_calls: Sequence[dict], task: ToolTask, step: int | None = None) -> dict:
    """Compare predicted calls with the ground truth (all of it, or one step's calls).

    Calls match when name and normalised arguments are equal (defaults filled in, strings
    case/whitespace-folded, 5.0 == 5); order does not matter. Unmatched calls are diagnosed
    as ``wrong_arguments`` (right tool), ``wrong_name``, ``missing`` or ``extra``; calls that
    cannot be read are ``invalid``. ``exact`` is the strict step-wise reward of the paper.
    """
    expected = task.calls if step is None else task.steps[step]
    messages: list[str] = []
    predicted = []
    for call in predicted_calls:
        try:
            predicted.append(normalize_call(call, task.tools))
        except ToolCallError as e:
            messages.append(f"invalid call: {e}")
    invalid = len(predicted_calls) - len(predicted)
    left = list(predicted)
    unmatched = []
    for want in (normalize_call(c, task.tools) for c in expected):
        if want in left:
            left.remove(want)
        else:
            unmatched.append(want)
    counts = {"wrong_name": 0, "wrong_arguments": 0, "missing": 0}
    for name, args in unmatched:
        same = next((p for p in left if p[0] == name), None)
        if same is not None:
            left.remove(same)
            counts["wrong_arguments"] += 1
            diff = [f"{k}: expected {args.get(k)!r}, got {same[1].get(k)!r}"
                    for k in sorted(set(args) | set(same[1])) if args.get(k) != same[1].get(k)]
            messages.append(f"wrong arguments for {name}: " + "; ".join(diff))
        elif left:
            other = left.pop(0)
            counts["wrong_name"] += 1
            messages.append(f"wrong tool: expected {name}, got {other[0]}")
        else:
            counts["missing"] += 1
            messages.append(f"missing call to {name}")
    messages += [f"unexpected call to {p[0]}" for p in left]
    matched = len(expected) - len(unmatched)
    n_pred = len(predicted_calls)
    return {
        "exact": not unmatched and not left and invalid == 0,
        "matched": matched,
        "expected": len(expected),
        "predicted": n_pred,
        "precision": matched / n_pred if n_pred else float(not expected),
        "recall": matched / len(expected) if expected else float(not n_pred),
        **counts,
        "extra": len(left),
        "invalid": invalid,
        "messages": messages,
    }


# --- task synthesis ------------------------------------------------------------------------


class _Trace:
    """Runs the ground-truth calls of a task being written, so results are real."""

    def __init__(self) -> None:
        self.world = World()
        self.steps: list[list[dict]] = []
        self.results: list[list[dict]] = []
        self.thoughts: list[str] = []

    def step(self, thought: str, *calls: tuple[str, dict]) -> list[dict]:
        results = [execute_call(name, args, self.world) for name, args in calls]
        self.steps.append([{"name": name, "arguments": args} for name, args in calls])
        self.results.append(results)
        self.thoughts.append(thought)
        return results


@dataclass
class _Draft:
    user: str
    answer: str
    trace: _Trace
    clarification: str = ""
    clarify_thought: str = ""
    followups: list[dict] = field(default_factory=list)


_SUBJECTS = ("Lunch", "Meeting notes", "Weekend plans", "Project update", "Quick question", "Thanks")
_BODIES = ("See you at noon.", "The report is attached.", "Are you free on Saturday?", "Thanks for your help!",
           "Can we move our call to 3pm?", "Happy birthday!")
_TEXTS = ("I'm running late.", "Call me when you can.", "Dinner is ready.", "On my way!", "Meeting moved to 4pm.")
_LABELS = ("gym", "meeting", "take medicine", "call mom", "wake up", "pick up kids", "laundry")
_CHORES = ("buy milk", "call the bank", "book flights", "water the plants", "renew passport", "pay rent",
          "clean the garage", "email the landlord")
_EVENTS = ("Dentist appointment", "Team meeting", "Birthday party", "Yoga class", "Book club", "Piano lesson")
_CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Egypt": "Cairo",
             "Peru": "Lima", "Norway": "Oslo", "Kenya": "Nairobi", "Canada": "Ottawa", "Brazil": "Brasilia",
             "Germany": "Berlin", "Greece": "Athens", "Portugal": "Lisbon", "Austria": "Vienna", "India": "New Delhi"}
_WORDS = ("garden", "window", "rocket", "planet", "silver", "orange", "puzzle", "candle", "mirror", "forest",
          "bridge", "pencil", "castle", "island", "guitar", "yellow", "summer", "winter", "basket", "camera")
_GREETINGS = {"Hi there!": "Hello! How can I help you today?",
              "Good morning!": "Good morning! What can I do for you?",
              "Thanks for your help!": "You're welcome! Let me know if you need anything else.",
              "Who are you?": "I am a helpful assistant that can use tools to answer your requests."}


def _time(rng: random.Random) -> str:
    return f"{rng.randint(5, 22):02d}:{rng.choice((0, 10, 15, 20, 30, 40, 45, 50)):02d}"


def _date(rng: random.Random) -> str:
    return (date(2025, 1, 16) + timedelta(days=rng.randint(0, 340))).isoformat()


def _amount(rng: random.Random) -> int | float:
    return rng.randint(1, 2000) if rng.random() < 0.8 else rng.randint(1, 400) + 0.5


def _first(contact: dict) -> str:
    return contact["name"].split()[0]


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _fmt(x: float) -> str:
    return f"{x:.2f}" if isinstance(x, float) else str(x)


_DONE = "I have the result I need, so I can answer the user."


def _single(rng: random.Random) -> _Draft:
    t = _Trace()
    tool = rng.choice(sorted(REGISTRY))
    if tool == "get_weather":
        city = rng.choice(list(CITIES))
        unit = rng.choice((None, "celsius", "fahrenheit"))
        u = f" in {unit.capitalize()}" if unit else ""
        user = rng.choice((f"What's the weather like in {city}{u}?", f"How warm is it in {city} right now{u}?",
                           f"Can you check the current weather in {city}{u}?"))
        (r,) = t.step(f"The user wants the current weather in {city}, so I call get_weather.",
                      ("get_weather", {"city": city, **({"unit": unit} if unit else {})}))
        answer = f"It is {r['condition']} in {city} at {r['temperature']} degrees {r['unit'].capitalize()}."
    elif tool == "convert_currency":
        amount = _amount(rng)
        frm, to = rng.sample(list(RATES), 2)
        user = rng.choice((f"Convert {amount} {frm} to {to}.", f"How much is {amount} {frm} in {to}?",
                           f"What are {amount} {frm} worth in {to}?"))
        (r,) = t.step(f"The user wants {amount} {frm} converted to {to}, so I call convert_currency.",
                      ("convert_currency", {"amount": amount, "from_currency": frm, "to_currency": to}))
        answer = f"{amount} {frm} is {_fmt(r['result'])} {to}."
    elif tool == "calculator":
        a, b, c = rng.randint(2, 999), rng.randint(2, 99), rng.randint(1, 999)
        expr = rng.choice((f"{a} * {b} + {c}", f"({a} + {c}) * {b}", f"{a} * {b} - {c}", f"{a} + {b} * {c}"))
        user = rng.choice((f"Use the calculator to work out {expr}.", f"Please calculate {expr} for me."))
        (r,) = t.step("The user wants an exact calculation, so I call calculator.",
                      ("calculator", {"expression": expr}))
        answer = f"{expr} = {r['result']}."
    elif tool == "lookup_stock":
        sym = rng.choice(list(STOCKS))
        user = rng.choice((f"What is the current price of {sym} stock?", f"Look up the share price of {sym}.",
                           f"How much does one {sym} share cost right now?"))
        (r,) = t.step(f"The user wants the price of {sym}, so I call lookup_stock.", ("lookup_stock", {"symbol": sym}))
        answer = f"{sym} is trading at {_fmt(r['price'])} USD."
    elif tool == "set_alarm":
        time, label = _time(rng), rng.choice((None, *_LABELS))
        if label:
            user = rng.choice((f"Set an alarm at {time} labelled '{label}'.",
                               f"Please set a '{label}' alarm for {time}."))
        else:
            user = rng.choice((f"Set an alarm for {time}.", f"Wake me up at {time}."))
        t.step(f"The user wants an alarm at {time}, so I call set_alarm.",
               ("set_alarm", {"time": time, **({"label": label} if label else {})}))
        answer = f"Your alarm is set for {time}" + (f" with the label '{label}'." if label else ".")
    elif tool == "search_contacts":
        contact = rng.choice(CONTACTS)
        first, field_ = _first(contact), rng.choice(("email", "phone", "both"))
        user = {"email": f"What is {first}'s email address?", "phone": f"What's {first}'s phone number?",
                "both": f"Find {first} in my contacts."}[field_]
        (r,) = t.step(f"I need {first}'s contact details, so I call search_contacts.",
                      ("search_contacts", {"name": first}))
        m = r["matches"][0]
        answer = {"email": f"{m['name']}'s email address is {m['email']}.",
                  "phone": f"{m['name']}'s phone number is {m['phone']}.",
                  "both": f"{m['name']}: email {m['email']}, phone {m['phone']}."}[field_]
    elif tool == "send_email":
        to, s, b = rng.choice(CONTACTS)["email"], rng.choice(_SUBJECTS), rng.choice(_BODIES)
        user = rng.choice((f"Send an email to {to} with the subject '{s}' and the body '{b}'.",
                           f"Email {to}: subject '{s}', body '{b}'."))
        t.step("The user gave the address, subject and body, so I call send_email.",
               ("send_email", {"to": to, "subject": s, "body": b}))
        answer = f"I sent the email '{s}' to {to}."
    elif tool == "send_text":
        phone, msg = rng.choice(CONTACTS)["phone"], rng.choice(_TEXTS)
        user = rng.choice((f"Text {phone} the message '{msg}'.", f"Send a text to {phone} saying '{msg}'."))
        t.step("The user gave the number and the message, so I call send_text.",
               ("send_text", {"phone": phone, "message": msg}))
        answer = f"I texted '{msg}' to {phone}."
    elif tool == "get_time":
        city = rng.choice(list(CITY_TIMEZONE))
        tz = CITY_TIMEZONE[city]
        place, user = rng.choice(((city, f"What time is it in {city}?"),
                                  (f"the {tz} timezone", f"What is the current time in the {tz} timezone?")))
        (r,) = t.step(f"The user wants the local time in {place}; that is {tz}, so I call get_time.",
                      ("get_time", {"timezone": tz}))
        answer = f"It is {r['time']} on {r['date']} in {place}."
    elif tool == "add_todo":
        item, p = rng.choice(_CHORES), rng.randint(1, 5)
        user = rng.choice((f"Add '{item}' to my to-do list with priority {p}.",
                           f"Put '{item}' on my todo list, priority {p}."))
        t.step("The user wants a to-do item added, so I call add_todo.", ("add_todo", {"item": item, "priority": p}))
        answer = f"I added '{item}' to your to-do list with priority {p}."
    elif tool == "get_distance":
        a, b = rng.sample(list(CITIES), 2)
        unit = rng.choice((None, "km", "miles"))
        u = f" in {unit}" if unit else ""
        user = rng.choice((f"How far is it from {a} to {b}{u}?", f"What is the distance from {a} to {b}{u}?"))
        (r,) = t.step(f"The user wants the distance from {a} to {b}, so I call get_distance.",
                      ("get_distance", {"origin": a, "destination": b, **({"unit": unit} if unit else {})}))
        answer = f"{a} and {b} are {r['distance']} {r['unit']} apart."
    elif tool == "translate_word":
        word, lang = rng.choice(list(TRANSLATIONS)), rng.choice(LANGUAGES)
        user = rng.choice((f"How do you say '{word}' in {lang}?", f"Translate '{word}' into {lang}."))
        (r,) = t.step(f"The user wants '{word}' in {lang}, so I call translate_word.",
                      ("translate_word", {"word": word, "target_language": lang}))
        answer = f"'{word}' in {lang} is '{r['translation']}'."
    elif tool == "find_restaurant":
        city, cuisine = rng.choice(list(CITIES)), rng.choice(CUISINES)
        user = rng.choice((f"Find me a good {cuisine} restaurant in {city}.",
                           f"Where can I eat {cuisine} food in {city}?"))
        (r,) = t.step(f"The user wants {_a(cuisine)} restaurant in {city}, so I call find_restaurant.",
                      ("find_restaurant", {"city": city, "cuisine": cuisine}))
        answer = f"Try {r['name']}, {_a(cuisine)} restaurant in {city} rated {r['rating']}."
    else:  # create_event
        title, day, time = rng.choice(_EVENTS), _date(rng), rng.choice((None, _time(rng)))
        at = f" at {time}" if time else ""
        user = rng.choice((f"Add '{title}' to my calendar on {day}{at}.", f"Schedule '{title}' for {day}{at}."))
        t.step("The user wants a calendar event, so I call create_event.",
               ("create_event", {"title": title, "date": day, **({"time": time} if time else {})}))
        answer = f"I added '{title}' to your calendar on {day}{at}."
    return _Draft(user, answer, t)


def _multi(rng: random.Random) -> _Draft:
    t = _Trace()
    shape = rng.choice(("email", "text", "stock", "restaurant", "drive"))
    if shape in ("email", "text"):
        contact = rng.choice(CONTACTS)
        first = _first(contact)
        if shape == "email":
            s, b = rng.choice(_SUBJECTS), rng.choice(_BODIES)
            user = rng.choice((f"Email {first} with the subject '{s}' and the body '{b}'.",
                               f"Send {first} an email: subject '{s}', body '{b}'."))
        else:
            s, b = "", rng.choice(_TEXTS)
            user = rng.choice((f"Text {first} '{b}'.", f"Send {first} a text message saying '{b}'."))
        _contact_then_send(t, first, shape, s, b)
        m = t.results[0][0]["matches"][0]
        answer = (f"I emailed {m['name']} at {m['email']} with the subject '{s}'." if shape == "email"
                  else f"I texted '{b}' to {m['name']} at {m['phone']}.")
    elif shape == "stock":
        sym, cur = rng.choice(list(STOCKS)), rng.choice([c for c in RATES if c != "USD"])
        user = rng.choice((f"What is the price of {sym} stock in {cur}?", f"How much is one {sym} share in {cur}?"))
        (r,) = t.step(f"I need the price of {sym} first, so I call lookup_stock.", ("lookup_stock", {"symbol": sym}))
        (c,) = t.step(f"{sym} costs {_fmt(r['price'])} USD. Now I convert that to {cur} with convert_currency.",
                      ("convert_currency", {"amount": r["price"], "from_currency": "USD", "to_currency": cur}))
        answer = f"{sym} costs {_fmt(r['price'])} USD, which is {_fmt(c['result'])} {cur}."
    elif shape == "restaurant":
        city, cuisine, day = rng.choice(list(CITIES)), rng.choice(CUISINES), _date(rng)
        user = (f"Find {_a(cuisine)} restaurant in {city} and add it to my calendar on {day}, "
                f"with the restaurant's name as the title.")
        (r,) = t.step(f"First I find {_a(cuisine)} restaurant in {city} with find_restaurant.",
                      ("find_restaurant", {"city": city, "cuisine": cuisine}))
        t.step(f"The restaurant is {r['name']}. Now I call create_event with that name on {day}.",
               ("create_event", {"title": r["name"], "date": day}))
        answer = f"I found {r['name']} and added it to your calendar on {day}."
    else:  # drive
        a, b = rng.sample(list(CITIES), 2)
        speed = rng.choice((50, 60, 80, 90, 100, 120))
        user = f"How many hours would it take to drive from {a} to {b} at {speed} km/h?"
        (r,) = t.step(f"I need the distance from {a} to {b} first, so I call get_distance.",
                      ("get_distance", {"origin": a, "destination": b}))
        expr = f"{r['distance']} / {speed}"
        (c,) = t.step(f"The distance is {r['distance']} km. I divide by {speed} with calculator.",
                      ("calculator", {"expression": expr}))
        answer = f"{a} to {b} is {r['distance']} km, so at {speed} km/h it takes about {round(c['result'], 1)} hours."
    return _Draft(user, answer, t)


def _contact_then_send(t: _Trace, first: str, channel: str, subject: str, body: str) -> None:
    (r,) = t.step(f"I need {first}'s contact details first, so I call search_contacts.",
                  ("search_contacts", {"name": first}))
    m = r["matches"][0]
    if channel == "email":
        t.step(f"{m['name']}'s email is {m['email']}. Now I call send_email.",
               ("send_email", {"to": m["email"], "subject": subject, "body": body}))
    else:
        t.step(f"{m['name']}'s phone number is {m['phone']}. Now I call send_text.",
               ("send_text", {"phone": m["phone"], "message": body}))


def _parallel(rng: random.Random) -> _Draft:
    t = _Trace()
    shape = rng.choice(("weather", "stock", "time", "translate"))
    if shape == "weather":
        a, b = rng.sample(list(CITIES), 2)
        user = f"What's the weather in {a} and in {b}?"
        ra, rb = t.step(f"Two independent lookups: I call get_weather for {a} and for {b}.",
                        ("get_weather", {"city": a}), ("get_weather", {"city": b}))
        answer = (f"{a}: {ra['condition']}, {ra['temperature']} degrees Celsius. "
                  f"{b}: {rb['condition']}, {rb['temperature']} degrees Celsius.")
    elif shape == "stock":
        a, b = rng.sample(list(STOCKS), 2)
        user = f"What are the share prices of {a} and {b}?"
        ra, rb = t.step(f"I call lookup_stock for {a} and for {b} at once.",
                        ("lookup_stock", {"symbol": a}), ("lookup_stock", {"symbol": b}))
        answer = f"{a} is at {_fmt(ra['price'])} USD and {b} is at {_fmt(rb['price'])} USD."
    elif shape == "time":
        a, b = rng.sample(list(CITY_TIMEZONE), 2)
        user = f"What time is it in {a} and in {b}?"
        ra, rb = t.step(f"{a} is in {CITY_TIMEZONE[a]} and {b} in {CITY_TIMEZONE[b]}; I call get_time for both.",
                        ("get_time", {"timezone": CITY_TIMEZONE[a]}), ("get_time", {"timezone": CITY_TIMEZONE[b]}))
        answer = f"It is {ra['time']} in {a} and {rb['time']} in {b}."
    else:
        word = rng.choice(list(TRANSLATIONS))
        la, lb = rng.sample(LANGUAGES, 2)
        user = f"How do you say '{word}' in {la} and in {lb}?"
        ra, rb = t.step(f"I call translate_word twice, for {la} and for {lb}.",
                        ("translate_word", {"word": word, "target_language": la}),
                        ("translate_word", {"word": word, "target_language": lb}))
        answer = f"'{word}' is '{ra['translation']}' in {la} and '{rb['translation']}' in {lb}."
    return _Draft(user, answer, t)


def _irrelevant(rng: random.Random) -> _Draft:
    shape = rng.choice(("capital", "reverse", "letters", "greeting"))
    if shape == "capital":
        country = rng.choice(sorted(_CAPITALS))
        user = rng.choice((f"What is the capital of {country}?", f"Which city is the capital of {country}?"))
        answer = f"The capital of {country} is {_CAPITALS[country]}."
    elif shape == "reverse":
        word = rng.choice(_WORDS)
        user = rng.choice((f"Spell the word '{word}' backwards.", f"What is '{word}' written in reverse?"))
        answer = f"'{word}' backwards is '{word[::-1]}'."
    elif shape == "letters":
        word = rng.choice(_WORDS)
        user = rng.choice((f"How many letters are in the word '{word}'?", f"Count the letters in '{word}'."))
        answer = f"The word '{word}' has {len(word)} letters."
    else:
        user = rng.choice(sorted(_GREETINGS))
        answer = _GREETINGS[user]
    t = _Trace()
    t.thoughts.append("None of the available tools is needed for this; I can answer directly.")
    return _Draft(user, answer, t)


def _multiturn(rng: random.Random) -> _Draft:
    t = _Trace()
    shape = rng.choice(("weather", "alarm", "todo", "event", "currency", "email", "text"))
    if shape == "weather":
        city = rng.choice(list(CITIES))
        user = rng.choice(("What's the weather like right now?", "Can you check the weather for me?"))
        ask, keys, reply = ("Which city would you like the weather for?", ["city", "where", "location"],
                            rng.choice((f"{city}, please.", f"In {city}.")))
        (r,) = t.step(f"The user wants the weather in {city}, so I call get_weather.",
                      ("get_weather", {"city": city}))
        answer = f"It is {r['condition']} in {city} at {r['temperature']} degrees Celsius."
    elif shape == "alarm":
        label, time = rng.choice(_LABELS), _time(rng)
        user = rng.choice((f"Set an alarm labelled '{label}'.", f"I need a '{label}' alarm."))
        ask, keys, reply = "What time should I set the alarm for?", ["time", "when"], f"Make it {time}."
        t.step(f"The alarm is at {time} with the label '{label}', so I call set_alarm.",
               ("set_alarm", {"time": time, "label": label}))
        answer = f"Your '{label}' alarm is set for {time}."
    elif shape == "todo":
        item, p = rng.choice(_CHORES), rng.randint(1, 5)
        user = rng.choice((f"Add '{item}' to my to-do list.", f"Put '{item}' on my todo list."))
        ask, keys, reply = ("What priority should it have, from 1 to 5?", ["priority", "important", "urgent"],
                            f"Priority {p}.")
        t.step(f"Now I know the priority is {p}, so I call add_todo.", ("add_todo", {"item": item, "priority": p}))
        answer = f"I added '{item}' to your to-do list with priority {p}."
    elif shape == "event":
        title, day = rng.choice(_EVENTS), _date(rng)
        user = rng.choice((f"Put '{title}' on my calendar.", f"Add '{title}' to my calendar."))
        ask, keys, reply = "On which date should I add it?", ["date", "day", "when"], f"On {day}."
        t.step(f"The event is on {day}, so I call create_event.", ("create_event", {"title": title, "date": day}))
        answer = f"I added '{title}' to your calendar on {day}."
    elif shape == "currency":
        amount = _amount(rng)
        frm, to = rng.sample(list(RATES), 2)
        user = f"Convert {amount} {frm} for me."
        ask, keys, reply = ("Which currency should I convert it to?", ["currency", "which", "convert"],
                            f"To {to}, please.")
        (r,) = t.step(f"The target is {to}, so I call convert_currency.",
                      ("convert_currency", {"amount": amount, "from_currency": frm, "to_currency": to}))
        answer = f"{amount} {frm} is {_fmt(r['result'])} {to}."
    else:  # email / text: missing content, then a two-step chain
        first = _first(rng.choice(CONTACTS))
        if shape == "email":
            s, b = rng.choice(_SUBJECTS), rng.choice(_BODIES)
            user = rng.choice((f"Send an email to {first}.", f"I want to email {first}."))
            ask, keys, reply = ("What should the subject and the message say?", ["subject", "say", "message", "body"],
                                f"The subject is '{s}' and the body is '{b}'.")
        else:
            s, b = "", rng.choice(_TEXTS)
            user = rng.choice((f"Send {first} a text.", f"I want to text {first}."))
            ask, keys, reply = "What should the message say?", ["say", "message", "text"], f"Say '{b}'."
        _contact_then_send(t, first, shape, s, b)
        m = t.results[0][0]["matches"][0]
        answer = f"Done: I sent your {'email' if shape == 'email' else 'text'} to {m['name']}."
    missing = {"weather": "which city", "alarm": "the time", "todo": "the priority", "event": "the date",
               "currency": "the target currency", "email": "the subject and body", "text": "the message"}[shape]
    return _Draft(user, answer, t, clarification=ask, clarify_thought=f"The request does not say {missing}, so I ask.",
                  followups=[{"keywords": keys, "reply": reply}])


_MAKERS: dict[str, Callable[[random.Random], _Draft]] = {
    "single": _single, "multi": _multi, "parallel": _parallel, "irrelevant": _irrelevant, "multiturn": _multiturn,
}


def _user_side(task: ToolTask) -> str:
    return "\n".join([task.user, *(f["reply"] for f in task.followups)])


def generate_tool_tasks(
    n: int,
    seed: int,
    kinds: Sequence[str] = DEFAULT_KINDS,
    *,
    split: str = "train",
    n_distractors: int = 2,
    unique: bool = False,
) -> list[ToolTask]:
    """``n`` tasks, each of a kind drawn uniformly from ``kinds`` (a kind listed twice is drawn
    twice as often). Each offers the tools it needs plus ``n_distractors`` others (irrelevant
    tasks: ``n_distractors + 1`` unrelated tools), in shuffled order."""
    kinds = tuple(kinds)
    if not kinds or any(k not in KINDS for k in kinds):
        raise TaskError(f"kinds must be a non-empty subset of {KINDS}, got {kinds!r}")
    if not isinstance(n_distractors, int) or not 0 <= n_distractors <= len(REGISTRY) - 2:
        raise TaskError(f"n_distractors must be an int in [0, {len(REGISTRY) - 2}], got {n_distractors!r}")

    def make(rng: random.Random, index: int) -> ToolTask:
        kind = rng.choice(kinds)
        d = _MAKERS[kind](rng)
        needed = list(dict.fromkeys(c["name"] for step in d.trace.steps for c in step))
        others = [name for name in sorted(REGISTRY) if name not in needed]
        offered = needed + rng.sample(others, n_distractors + (0 if needed else 1))
        rng.shuffle(offered)
        thoughts = ([d.clarify_thought] if d.clarification else []) + d.trace.thoughts
        if kind != "irrelevant":
            thoughts.append(_DONE)
        return ToolTask(
            id=task_id("tool", split, seed, index), kind=kind, user=d.user, tools=tool_schemas(offered),
            steps=d.trace.steps, results=d.trace.results, answer=d.answer, thoughts=thoughts,
            clarification=d.clarification, followups=d.followups, split=split,
        )

    return sample(n, make, _user_side, family="tool", seed=seed, split=split, unique=unique)
