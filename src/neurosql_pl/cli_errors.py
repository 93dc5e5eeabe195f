"""What the CLI refuses before it trains, and how it says so and any error of the user's: one
line that names the problem and what to do, with nothing already written touched.

  check_writable            the run folder can be created and written
  protect_earlier_run       a fresh fit does not replace an earlier run's checkpoints
  check_resume_checkpoint   --ckpt_path names a whole checkpoint (else: which file, and which are left)
  short_error, root_cause   jsonargparse's long reports → the gist (a wrong option, a constructor's error)
  OneLineErrors             a parser whose usage errors are one 'error: …' line (status 2)
  user_error_line           a `UserError` as `neurosql` prints it (status 1), from wherever it was raised
"""

from __future__ import annotations

import os
import re
import sys
import zipfile
from pathlib import Path
from typing import NoReturn

from .errors import UserError

__all__ = [
    "OneLineErrors", "check_resume_checkpoint", "check_writable", "protect_earlier_run", "root_cause", "short_error",
    "user_error_line",
]


class OneLineErrors:
    """Mixed into a jsonargparse parser: a wrong option ends in one short 'error: …' line (exit
    status 2), not in the whole usage text and jsonargparse's 'Union subtypes' report."""

    exit_on_error: bool
    prog: str

    def help_command(self) -> str:
        """The command that lists every option, named in the error line."""
        return f"{self.prog} --help"

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # jsonargparse trying one alternative of several: it raises, not exits
            super().error(message, ex)  # type: ignore[misc]
        print(f"error: {short_error(message)} (`{self.help_command()}` lists every option)", file=sys.stderr)
        sys.exit(2)


def user_error_line(err: UserError, rank: int = 0) -> str:
    """``error: <message>``: the whole message (a dataset's expected layout spans lines), with
    ``(rank r)`` from the second DDP process on, where every rank meets the same error. A message
    that a DataLoader worker re-raised (``Caught … in DataLoader worker process k. Original
    Traceback …``) is cut back to the original message."""
    message = str(err)
    if message.startswith("Caught ") and "\nOriginal Traceback" in message:
        raised = list(re.finditer(rf"^(?:[\w.]+\.)?{re.escape(type(err).__name__)}: ", message, re.MULTILINE))
        message = message[raised[-1].end():].strip() if raised else message
    where = f" (rank {rank})" if rank else ""
    return f"error{where}: {message}"


def short_error(message: str) -> str:
    """jsonargparse's error text → its gist: for a 'Union subtypes' report, the key, the class and
    the class's own complaint; else the first line."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    key = re.match(r'Parser key "([^"]+)"', lines[0]) if lines else None
    for i, line in enumerate(lines):
        problem = re.match(r"- Problem with given class_path '([^']+)':", line)
        if problem and i + 1 < len(lines):
            where = f"--{key.group(1)} ({problem.group(1)})" if key else problem.group(1)
            return f"{where}: {lines[i + 1]}"
    if key:
        bullets = [line[2:] for line in lines if line.startswith("- ") and "NoneType" not in line]
        detail = bullets[0] if bullets else (lines[1] if len(lines) > 1 else "")
        return f"--{key.group(1)}: {detail}"
    return lines[0] if lines else message


def root_cause(err: BaseException) -> BaseException:
    """The innermost exception of err's chain (``raise … from …`` and implicit context)."""
    seen = {id(err)}
    while (inner := err.__cause__ or err.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        err = inner
    return err


def check_resume_checkpoint(ckpt_path: str | None) -> None:
    """Before anything is built: ``--ckpt_path`` must name a whole checkpoint (a zip archive, as
    torch.save writes it). A truncated or foreign file is named, with the checkpoints left beside it."""
    if ckpt_path is None or ckpt_path in ("last", "best", "hpc", "registry"):  # Lightning resolves these
        return
    path = Path(ckpt_path)
    if not path.is_file():
        problem = "does not exist" if not path.exists() else "is not a file"
    else:
        try:
            with zipfile.ZipFile(path) as archive:
                archive.getinfo(next(n for n in archive.namelist() if n.endswith("data.pkl")))
            return
        except (zipfile.BadZipFile, StopIteration, OSError) as err:
            problem = f"is truncated or not a checkpoint ({type(err).__name__}: {err or 'no data.pkl inside'})"
    folder = path.parent if path.parent.is_dir() else None
    others = sorted((p for p in folder.glob("*.ckpt") if p != path), key=lambda p: p.stat().st_mtime) if folder else []
    left = (f"checkpoints left in {folder}: {', '.join(p.name for p in others)}; resume from one with --ckpt_path"
            if others else "no other checkpoint is beside it; start afresh without --ckpt_path")
    raise SystemExit(f"error: --ckpt_path {path} {problem}. Nothing was changed; {left}")


def check_writable(run_dir: Path) -> None:
    """Fail before training when the run folder cannot be created or written."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise SystemExit(
            f"error: cannot write to the run folder {run_dir} ({error.strerror or error}); "
            "choose a writable one with --trainer.default_root_dir DIR (make train OUT=DIR)"
        ) from error


def protect_earlier_run(checkpoint_dir: Path, ckpt_path: str | None, overwrite: bool) -> None:
    """Refuse to start a fresh run over the checkpoints of an earlier one (unless asked)."""
    earlier = sorted(checkpoint_dir.glob("*.ckpt")) if checkpoint_dir.is_dir() else []
    if earlier and ckpt_path is None and not overwrite:
        raise SystemExit(
            f"error: {checkpoint_dir} already holds checkpoints of an earlier run ({earlier[0].name}). "
            f"Resume it with --ckpt_path {checkpoint_dir / 'last.ckpt'} (make train ARGS='--ckpt_path …'), "
            "choose another run folder (--trainer.default_root_dir DIR, or make train OUT=DIR), "
            "or pass --overwrite true to replace them."
        )
