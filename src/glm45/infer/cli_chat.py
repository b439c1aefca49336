"""`glm45 chat --model DIR`: chat with a checkpoint in the terminal.

The conversation is kept and re-rendered with the GLM-4.5 chat template each turn. Replies
stream as they are generated: reasoning dimmed, then the answer, then any tool calls parsed
(name and JSON arguments). Tools come from a JSON file (a list of OpenAI-style tool objects, or
{"tools": [...]}); after a tool call you type each tool's result and the model continues.

Commands: /think and /nothink (thinking mode), /reset (forget the conversation), /tools,
/help, /exit (or end of input).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from glm45.infer.cli_options import add_engine_arguments, add_sampling_arguments, load_engine, sampling_from_args

HELP = "commands: /think /nothink /reset /tools /help /exit"
DIM, BOLD, RESET = "\x1b[2m", "\x1b[1m", "\x1b[0m"


class ChatError(ValueError):
    """A tools file or option the chat cannot use."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_engine_arguments(p)
    p.add_argument("--tools", default=None, help="JSON file with the tools the model may call")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--nothink", action="store_true", help="start with thinking off")
    color = p.add_mutually_exclusive_group()
    color.add_argument("--color", dest="color", action="store_true", default=None,
                       help="ANSI colours (default: on a tty)")
    color.add_argument("--no-color", dest="color", action="store_false")
    add_sampling_arguments(p, max_tokens=1024, temperature=0.6)


def load_tools(path: str | None) -> list[dict[str, Any]] | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise ChatError(f"cannot read tools file {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise ChatError(f"tools file {path} is not valid JSON: {e}") from None
    if isinstance(data, dict) and "tools" in data:
        data = data["tools"]
    if not isinstance(data, list) or not all(isinstance(t, dict) for t in data):
        raise ChatError(f"tools file {path} must hold a list of tool objects (or {{\"tools\": [...]}})")
    for i, t in enumerate(data):
        fn = t.get("function", t)
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise ChatError(f"tools file {path}: tool {i} has no function name")
    return data


def tool_name(tool: dict[str, Any]) -> str:
    return tool.get("function", tool)["name"]


class ChatSession:
    """The conversation, and one streamed assistant turn at a time."""

    def __init__(self, engine, params, tools=None, system: str | None = None, enable_thinking: bool = True,
                 out: TextIO = sys.stdout, color: bool = False):
        self.engine, self.params, self.tools = engine, params, tools
        self.system, self.enable_thinking = system, enable_thinking
        self.out, self.color = out, color
        self.messages: list[dict[str, Any]] = []
        self.reset()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def _style(self, text: str, style: str) -> str:
        return f"{style}{text}{RESET}" if self.color and text else text

    def reply(self) -> dict[str, Any]:
        """Generate, stream and record the assistant's turn; returns the parsed reply."""
        from glm45.chat import StreamParser

        prompt = {"messages": self.messages, "tools": self.tools, "enable_thinking": self.enable_thinking}
        rid = self.engine.add_request(prompt, self.params)
        parser = StreamParser(self.tools, enable_thinking=self.enable_thinking)
        shown = None  # which part is being printed: reasoning or content
        finish = None
        try:
            while finish is None:
                for out in self.engine.step():
                    if out.request_id != rid:
                        continue
                    deltas = parser.feed(out.new_text)
                    if out.finished:
                        deltas += parser.finish()
                        finish = out.finish_reason
                    shown = self._show(deltas, shown)
        except KeyboardInterrupt:
            self.engine.abort(rid)
            self.engine.step()
            parser.finish()
            finish = "abort"
        self.out.write("\n")
        result = parser.result
        for call in result["tool_calls"]:
            line = f"[tool call] {call['name']} {json.dumps(call['arguments'], ensure_ascii=False)}"
            self.out.write(self._style(line, BOLD) + "\n")
        if result["incomplete_tool_call"]:
            self.out.write(f"[cut-off tool call: {result['incomplete_tool_call']['name']}]\n")
        if finish == "length":
            self.out.write("[reply cut off at --max-tokens]\n")
        self.out.flush()
        message: dict[str, Any] = {"role": "assistant", "content": result["content"]}
        if result["reasoning_content"]:
            message["reasoning_content"] = result["reasoning_content"]
        if result["tool_calls"]:
            message["tool_calls"] = result["tool_calls"]
        self.messages.append(message)
        return result

    def _show(self, deltas: list[dict[str, Any]], shown: str | None) -> str | None:
        for d in deltas:
            for kind in ("reasoning_content", "content"):
                text = d.get(kind)
                if text:
                    if shown == "reasoning_content" and kind == "content":
                        self.out.write("\n")
                    shown = kind
                    self.out.write(self._style(text, DIM) if kind == "reasoning_content" else text)
        self.out.flush()
        return shown


def run(args: argparse.Namespace) -> int:
    from glm45.chat import ChatFormatError

    try:
        tools = load_tools(args.tools)
        params = sampling_from_args(args)
        engine = load_engine(args)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if engine.tokenizer is None:
        print(f"error: {args.model} has no tokenizer.json; chat needs one", file=sys.stderr)
        return 2
    color = sys.stdout.isatty() if args.color is None else args.color
    session = ChatSession(engine, params, tools, args.system, not args.nothink, sys.stdout, color)
    interactive = sys.stdin.isatty()
    say = print
    say(f"glm45 chat — {args.model} (thinking {'on' if session.enable_thinking else 'off'}). {HELP}")

    def read(prompt: str) -> str | None:
        if interactive:
            try:
                return input(prompt)
            except EOFError:
                return None
        line = sys.stdin.readline()
        return None if line == "" else line.rstrip("\n")

    while True:
        line = read("you> ")
        if line is None:
            break
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            break
        if text in ("/think", "/nothink"):
            session.enable_thinking = text == "/think"
            say(f"[thinking {'on' if session.enable_thinking else 'off'}]")
            continue
        if text == "/reset":
            session.reset()
            say("[conversation cleared]")
            continue
        if text == "/tools":
            say("[tools] " + (", ".join(tool_name(t) for t in tools) if tools else "none"))
            continue
        if text.startswith("/") and text.split()[0] in ("/help", "/?"):
            say(HELP)
            continue
        session.messages.append({"role": "user", "content": line})
        while True:
            try:
                result = session.reply()
            except (ChatFormatError, ValueError) as e:
                session.messages.pop()
                say(f"error: {e}")
                break
            if not result["tool_calls"]:
                break
            for call in result["tool_calls"]:
                answer = read(f"result of {call['name']}> ")
                if answer is None:
                    return 0
                session.messages.append({"role": "tool", "name": call["name"], "content": answer})
    return 0
