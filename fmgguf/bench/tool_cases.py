"""The fixed tool-call suite (``fmgguf bench --suite tools``): 44 chats with a coding agent's tools.

Kinds: ``call`` (the answer must call ``expect``), ``no_call`` (a tool would be wrong), ``parallel`` (every
name in ``expect`` must be called), ``multi_turn`` (earlier calls and their results in the history;
``expect`` empty means the answer must use the result, not call again). All with tool_choice auto, the
hard case: ``required`` only forces a call, which the grammar then makes valid by construction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from fmgguf._util import JsonObject
from fmgguf.runtime.tools.tools import ToolSpec

_S, _I = {"type": "string"}, {"type": "integer"}


def _obj(required: list[str], **props: Mapping[str, object]) -> JsonObject:
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec("read_file", "Read a text file of the project and return its content.", _obj(["path"], path=_S)),
    ToolSpec("write_file", "Create or overwrite a file of the project with the given content.",
             _obj(["path", "content"], path=_S, content=_S)),
    ToolSpec("list_dir", "List the files and folders in a directory of the project.", _obj(["path"], path=_S)),
    ToolSpec("run_shell", "Run a shell command in the project directory and return its output.",
             _obj(["command"], command=_S)),
    ToolSpec("search_code", "Search the project's source code for a text and return the matching lines.",
             _obj(["query"], query=_S, max_results={"type": "integer", "minimum": 1, "maximum": 100})),
    ToolSpec("get_weather", "Get the current weather for a city.",
             _obj(["city"], city=_S, unit={"type": "string", "enum": ["celsius", "fahrenheit"]})),
)


@dataclass(frozen=True)
class ToolCase:
    id: str
    kind: str
    messages: tuple[JsonObject, ...]
    expect: tuple[str, ...] = ()
    notes: str = field(default="", compare=False)


def _u(text: str) -> JsonObject:
    return {"role": "user", "content": text}


_SYSTEM = {"role": "system", "content": "You are a coding assistant working in the user's project. Use the tools "
                                        "when you need to look at or change the project; otherwise just answer."}

_CALL = [
    ("read-readme", "Read the file README.md and tell me what the project does.", "read_file"),
    ("read-config", "Open pyproject.toml so we can check the dependencies.", "read_file"),
    ("read-main", "Show me the contents of src/main.py.", "read_file"),
    ("list-root", "List the files in the project's root directory.", "list_dir"),
    ("list-tests", "What files are in the tests/ folder?", "list_dir"),
    ("run-tests", "Run the test suite with `pytest -q` and tell me if it passes.", "run_shell"),
    ("run-git", "Run `git status` to see what changed.", "run_shell"),
    ("run-lint", "Run the linter: `ruff check .`", "run_shell"),
    ("search-todo", "Search the code for TODO comments.", "search_code"),
    ("search-def", "Find where the function parse_config is defined in the code.", "search_code"),
    ("search-import", "Search the source for every import of requests.", "search_code"),
    ("write-gitignore", "Create a .gitignore file containing the line `__pycache__/`.", "write_file"),
    ("write-hello", "Write a file hello.py that prints hello world.", "write_file"),
    ("weather-paris", "What's the weather like in Paris right now?", "get_weather"),
    ("weather-tokyo-f", "Get the current weather in Tokyo in fahrenheit.", "get_weather"),
    ("read-license", "Read LICENSE and tell me which license this is.", "read_file"),
    ("list-src", "List what is inside the src directory.", "list_dir"),
    ("run-python", "Run `python --version` in the shell.", "run_shell"),
    ("search-class", "Search the code for the class UserRepository.", "search_code"),
    ("read-changelog", "Please read CHANGELOG.md.", "read_file"),
]

_NO_CALL = [
    ("hi", "Hi! How are you?"),
    ("explain-decorator", "Explain what a Python decorator is, in two sentences."),
    ("write-reverse", "Write a Python function that reverses a string. Just show the code."),
    ("explain-rebase", "What is the difference between git merge and git rebase?"),
    ("big-o", "What is the time complexity of binary search?"),
    ("sql-join", "Write an SQL query that joins users and orders on user_id."),
    ("thanks", "Thanks, that's all for now."),
    ("regex", "Give me a regex that matches an email address."),
    ("name-ideas", "Suggest three names for a command-line todo app."),
    ("explain-async", "In one paragraph: what does async/await do in JavaScript?"),
    ("math", "What is 17 times 23?"),
    ("fix-snippet", "Why does `print(len(5))` fail in Python?"),
]

_PARALLEL = [
    ("read-two", "Read both README.md and setup.py.", ("read_file",)),
    ("list-and-read", "List the docs/ folder and also read docs/index.md.", ("list_dir", "read_file")),
    ("weather-two", "What's the weather in Berlin and in Madrid?", ("get_weather",)),
    ("search-and-run", "Search the code for 'deprecated' and also run `pytest -q`.", ("search_code", "run_shell")),
]


def _history(call_name: str, args: str, result: str, ask: str, then: str) -> tuple[JsonObject, ...]:
    return (_SYSTEM, _u(ask),
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": call_name, "arguments": args}}]},
            {"role": "tool", "tool_call_id": "call_1", "name": call_name, "content": result},
            _u(then))


_MULTI = [
    ("mt-list-then-read", _history("list_dir", '{"path": "."}', "README.md\nmain.py\nutils.py",
                                   "What files are in the project?", "Now read main.py."), ("read_file",)),
    ("mt-read-then-answer", _history("read_file", '{"path": "README.md"}', "# Calc\nA tiny calculator CLI.",
                                     "Read README.md.", "So, what is this project? Answer in one sentence."), ()),
    ("mt-tests-then-fix", _history("run_shell", '{"command": "pytest -q"}', "1 failed: test_add (utils.py:3)",
                                   "Run the tests.", "Open utils.py so we can see the bug."), ("read_file",)),
    ("mt-weather-then-answer", _history("get_weather", '{"city": "Oslo"}', '{"temp_c": -3, "sky": "snow"}',
                                        "Weather in Oslo?", "Should I wear a coat? Answer yes or no and why."), ()),
    ("mt-search-then-read", _history("search_code", '{"query": "def load"}', "app/io.py:12: def load(path):",
                                     "Where is load defined?", "Read that file."), ("read_file",)),
    ("mt-ls-then-summary", _history("list_dir", '{"path": "src"}', "a.py\nb.py",
                                    "List src.", "How many files did you find? Just the number."), ()),
    ("mt-write-then-run", _history("write_file", '{"path": "t.py", "content": "print(1)"}', "ok",
                                   "Create t.py printing 1.", "Now run it with `python t.py`."), ("run_shell",)),
    ("mt-read-then-thanks", _history("read_file", '{"path": "LICENSE"}', "MIT License ...",
                                     "Read LICENSE.", "Great, thanks!"), ()),
]


def cases() -> list[ToolCase]:
    out = [ToolCase(i, "call", (_SYSTEM, _u(t)), (n,)) for i, t, n in _CALL]
    out += [ToolCase(i, "no_call", (_SYSTEM, _u(t))) for i, t in _NO_CALL]
    out += [ToolCase(i, "parallel", (_SYSTEM, _u(t)), n) for i, t, n in _PARALLEL]
    out += [ToolCase(i, "multi_turn", m, n) for i, m, n in _MULTI]
    return out
