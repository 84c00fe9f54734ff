"""Loading the user's action and running it for one request (any launcher process).

``run_request`` is the whole per-request path: parse the line, export the activation
context, call ``main``, encode the result. It never raises for a problem of the
request or the action: those become ``{"error": ...}`` results. It lets SystemExit and
KeyboardInterrupt through, so each memory backend decides what an exiting action costs.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

from rewind.request.errors import ActionLoadError

ActionMain = Callable[[Any], Any]

_OWN_DIR = str(Path(__file__).resolve().parents[1])
ACTION_MODULE = "main__"
_CONTEXT_TYPES = (str, int, float, bool)
# The longest timeout poll(2) takes (a C int of milliseconds); a later deadline is none.
MAX_DEADLINE_S = (2**31 - 1) / 1000.0


def activate_virtualenv(action_dir: str) -> None:
    """Run the action's bundled ``virtualenv/bin/activate_this.py``, if it has one."""
    venv = os.path.join(action_dir, "virtualenv")
    if not os.path.isdir(venv):
        return
    for sub in ("bin", "Scripts"):
        script = os.path.join(venv, sub, "activate_this.py")
        if os.path.isfile(script):
            with open(script, encoding="utf-8") as fh:
                code = compile(fh.read(), script, "exec")
            exec(code, {"__file__": script, "__name__": "__activate_this__"})
            return
    raise ActionLoadError("Invalid virtualenv. Zip file does not include 'activate_this.py'.")


def load_action(action_dir: str, main_name: str) -> ActionMain:
    """Import the action module from ``action_dir`` and return its entry point."""
    activate_virtualenv(action_dir)
    if action_dir not in sys.path:
        sys.path.insert(0, action_dir)
    try:
        module = importlib.import_module(ACTION_MODULE)
    except Exception as exc:
        print_user_traceback(exc)
        raise ActionLoadError(f"cannot import the action: {exc}") from None
    fn = getattr(module, main_name, None)
    if not callable(fn):
        raise ActionLoadError(f"the action has no function named {main_name!r}")
    return fn  # type: ignore[no-any-return]


def _is_runtime_frame(filename: str) -> bool:
    return filename.startswith(_OWN_DIR) or filename.startswith("<frozen importlib")


def print_user_traceback(exc: BaseException) -> None:
    """Print a traceback to stderr without the launcher's own frames."""
    tb = exc.__traceback__
    while tb is not None and _is_runtime_frame(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    lines = traceback.format_exception(type(exc), exc, tb)
    sys.stderr.write("".join(lines))


def error_line(message: str, **extra: str) -> bytes:
    """Encode an error result line produced by the runtime itself."""
    return json.dumps({"error": message, **extra}, ensure_ascii=False).encode() + b"\n"


def export_context(request: dict[str, Any], environ: MutableMapping[str, str]) -> str | None:
    """Export every key but ``value`` as ``__OW_<KEY>``; return an error text or None."""
    for key, val in request.items():
        if key == "value":
            continue
        if not isinstance(val, _CONTEXT_TYPES):
            return f"context key {key!r} must be a string, not {type(val).__name__}"
        text = val if isinstance(val, str) else json.dumps(val)
        environ["__OW_" + key.upper()] = text
    return None


def parse_request(line: bytes) -> tuple[dict[str, Any] | None, bytes | None]:
    """Decode a request line: (request, None) or (None, error result line)."""
    try:
        request = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, error_line(f"Invalid JSON in the request: {exc}")
    except RecursionError:
        return None, error_line("The request is nested too deeply to be decoded.")
    except MemoryError:
        return None, error_line("The request is too large to be decoded in memory.")
    if not isinstance(request, dict):
        return None, error_line("The request must be a JSON object with a 'value' key.")
    return request, None


def encode_result(result: Any) -> bytes:
    """Encode the action's result as one line; unencodable results become errors."""
    try:
        text = json.dumps(result, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        return error_line(f"The action returned a result that cannot be encoded as JSON: {exc}")
    try:
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        # A lone surrogate has no UTF-8 form: escape it (\udXXX), so the reply stays valid
        # UTF-8 and valid JSON, and the string round-trips for a JSON reader.
        return json.dumps(result, ensure_ascii=True, allow_nan=False).encode() + b"\n"


def flush_logs() -> None:
    """Flush the action's stdout and stderr so logs precede the activation's sentinel.

    The text streams, the binary buffers under them (an action may write to
    ``sys.stdout.buffer``) and the original streams (it may have replaced ``sys.stdout``).
    """
    streams: list[Any] = []
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        streams += [stream, getattr(stream, "buffer", None)]
    for stream in streams:
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError, AttributeError):
            pass


Parsed = tuple[dict[str, Any] | None, bytes | None]  # parse_request's answer


def run_request(main: ActionMain, line: bytes) -> bytes:
    """Run one request line through ``main``; return the result line (with newline)."""
    return run_parsed(main, parse_request(line))


def run_parsed(main: ActionMain, parsed: Parsed) -> bytes:
    """``run_request`` for a line parse_request has decoded already (parse once)."""
    request, err = parsed
    if request is None:
        assert err is not None
        return err
    ctx_err = export_context(request, os.environ)
    if ctx_err is not None:
        return error_line(ctx_err)
    payload = request.get("value", {})
    try:
        result = main(payload)
    except Exception as exc:
        print_user_traceback(exc)
        result = {"error": str(exc)}
    finally:
        flush_logs()
    return encode_result(result)


def deadline_of(line: bytes, now: float | None = None) -> float | None:
    """The request's ``deadline`` (epoch ms) as epoch seconds, or None: not enforced.

    Read from the raw line in the request process only; the snapshot process gets the
    number, never the request. A deadline already past when the request arrives is not
    enforced (OpenWhisk's conformance test sends ``"deadline": "123"``; the invoker
    enforces its own time limit). Anything that is not a finite number of milliseconds
    (NaN, infinities, text, objects, booleans, nesting too deep to parse) or lies further
    ahead than ``poll`` can wait is treated as absent, never as an error.
    """
    return deadline_in(parse_request(line)[0], now)


def deadline_in(request: dict[str, Any] | None, now: float | None = None) -> float | None:
    """``deadline_of`` for a request parse_request has decoded already (parse once)."""
    if request is None:
        return None
    raw = request.get("deadline")
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        return None
    try:
        seconds = float(raw) / 1000.0
    except (ValueError, OverflowError):
        return None
    now = time.time() if now is None else now
    if not math.isfinite(seconds) or seconds <= now or seconds - now > MAX_DEADLINE_S:
        return None
    return seconds
