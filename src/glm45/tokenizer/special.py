"""The GLM-4.5 special tokens and their ids.

Released GLM-4.5 checkpoints place them at 151329..151360 (see REFERENCE.md). Tokenizers
trained by glm45 place them first, at ids 0..len(SPECIAL_TOKENS)-1 in this order, so small
vocabularies stay small and ids are stable across presets.
"""

from __future__ import annotations

SPECIAL_TOKENS: list[str] = [
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|code_prefix|>",
    "<|code_middle|>",
    "<|code_suffix|>",
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<arg_key>",
    "</arg_key>",
    "<arg_value>",
    "</arg_value>",
    "/nothink",
]

# Ids in the released GLM-4.5 vocabulary (151552 entries).
RELEASED_SPECIAL_IDS: dict[str, int] = {
    "<|endoftext|>": 151329, "[MASK]": 151330, "[gMASK]": 151331, "[sMASK]": 151332,
    "<sop>": 151333, "<eop>": 151334, "<|system|>": 151335, "<|user|>": 151336,
    "<|assistant|>": 151337, "<|observation|>": 151338, "<|code_prefix|>": 151347,
    "<|code_middle|>": 151348, "<|code_suffix|>": 151349, "<think>": 151350, "</think>": 151351,
    "<tool_call>": 151352, "</tool_call>": 151353, "<tool_response>": 151354,
    "</tool_response>": 151355, "<arg_key>": 151356, "</arg_key>": 151357, "<arg_value>": 151358,
    "</arg_value>": 151359, "/nothink": 151360,
}

# Generation stops on these: end of text, the user's turn, a tool observation.
STOP_TOKENS: list[str] = ["<|endoftext|>", "<|user|>", "<|observation|>"]
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|endoftext|>"
