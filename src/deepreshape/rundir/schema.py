"""The run-directory schema: every file a run directory (or a sweep root) can hold, by
name, with its reader and writer.

This is the only module that spells a run file's name; everything else goes through the
objects below (a test fails on a name spelled anywhere else under ``src/``). A run
directory holds:

========================  ====================================================  ===========
file                      what                                                  written by
========================  ====================================================  ===========
``config.json``           spec, data set, recipe, seed, method tag, versions    train
``checkpoint.pt``         weights, optimizer, scheduler, epoch, RNG states      train
``metrics.jsonl``         one line per epoch                                    train
``results.json``          final accuracy, exact ReLUs / MACs / params           train
``criticality.json``      stagewise criticality C_k and the order               criticality
``reduce.json``           the networks a DeepReDuce pipeline produced           reduce
``snl.json``              SNL budget, mask phase history, final counts          snl
``mask_phase.pt``         a finished SNL mask phase (resumable)                 snl
``pi-<proto>-<link>.json`` one secure-inference measurement per protocol, link  pi
``.lock``                 the one-writer lock (flock)                           every writer
========================  ====================================================  ===========

and a sweep root ``sweep.json`` (the driver's state), ``results.json`` /
``results.csv`` (its table) and, under the Ray backend, ``.ray-driver.log`` (Ray's own
log lines, kept off the terminal). Writes are atomic (temporary file, then rename); readers
give one-line errors (`CheckpointError`) for a missing or broken file, or, for the
optional readers used by reports, a note instead of an error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepreshape import fileio
from deepreshape.errors import CheckpointError

PathLike = str | Path


def read_json(path: PathLike, what: str | None = None) -> Any:
    """JSON from `path`; CheckpointError naming `what` (default: the file name) if it is
    missing or not JSON."""
    path = Path(path)
    what = what or path.name
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no {what} here (is this a deepreshape run directory?)") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: a folder, not the {what} file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: broken {what} ({e.__class__.__name__}: {e})") from None


def read_optional(path: PathLike) -> tuple[Any, str | None]:
    """(parsed JSON, None), (None, None) for a missing file, or (None, why) for a broken one:
    what reports read, where a bad file becomes a note, never an error."""
    path = Path(path)
    if not path.exists():
        return None, None
    try:
        return json.loads(path.read_text()), None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"{path}: unreadable ({e.__class__.__name__}); left out"


@dataclass(frozen=True)
class RunFile:
    """One named file of a run directory: `what` people call it, `maker` the command that
    writes it (for "run X first" messages)."""

    name: str
    what: str
    maker: str

    def path(self, run_dir: PathLike) -> Path:
        """Where the file lives in `run_dir`."""
        return Path(run_dir) / self.name

    def exists(self, run_dir: PathLike) -> bool:
        """Whether `run_dir` holds this file."""
        return self.path(run_dir).is_file()

    def remove(self, run_dir: PathLike) -> None:
        """Delete the file if it is there."""
        self.path(run_dir).unlink(missing_ok=True)


@dataclass(frozen=True)
class JsonFile(RunFile):
    """A JSON file holding one object of type `holds` (dict unless said)."""

    holds: type = dict

    def read(self, run_dir: PathLike) -> Any:
        """The parsed file; CheckpointError if missing, broken or not a `holds`."""
        path = self.path(run_dir)
        data = read_json(path, self.name)
        if not isinstance(data, self.holds):
            raise CheckpointError(
                f"{path}: broken {self.name} (a {type(data).__name__}, not the "
                f"{self.holds.__name__} `{self.maker}` writes); rerun or delete it")
        return data

    def read_if_present(self, run_dir: PathLike) -> Any | None:
        """Like `read`, but None when the file is not there (an unfinished step)."""
        return self.read(run_dir) if self.exists(run_dir) else None

    def read_optional(self, run_dir: PathLike) -> tuple[Any, str | None]:
        """(data, None), (None, None) if missing, (None, note) if unreadable or of the
        wrong type; never raises (reports)."""
        data, note = read_optional(self.path(run_dir))
        if data is not None and not isinstance(data, self.holds):
            return None, (f"{self.path(run_dir)}: present but not a deepreshape {self.what} "
                          f"(a {type(data).__name__}); left out")
        return data, note

    def write(self, run_dir: PathLike, obj: Any) -> Path:
        """Write `obj` atomically (the folder is made if needed)."""
        return fileio.write_json(self.path(run_dir), obj)


@dataclass(frozen=True)
class JsonLinesFile(RunFile):
    """One JSON object a line (per-epoch metrics)."""

    def read(self, run_dir: PathLike) -> list[dict]:
        """Every record ([] if there is no file yet); CheckpointError on a broken line."""
        path = self.path(run_dir)
        if not path.exists():
            return []
        try:
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path}: broken {self.name} ({e.__class__.__name__})") from None

    def append(self, run_dir: PathLike, record: dict) -> Path:
        """Add one record (the file is rewritten atomically; these files are small)."""
        return fileio.append_jsonl(self.path(run_dir), record)

    def keep_epochs(self, run_dir: PathLike, epochs: int) -> None:
        """Keep only the records of the first `epochs` epochs (a resume continues from its
        checkpoint's epoch; a kill after the metrics write left later lines). Torn or
        foreign lines are dropped."""
        path = self.path(run_dir)
        if not path.exists():
            return
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        keep = []
        for line in lines:
            try:
                if int(json.loads(line).get("epoch", 0)) > epochs:
                    continue
            except (json.JSONDecodeError, TypeError, ValueError, AttributeError):
                continue
            keep.append(line)
        if keep != lines:
            fileio.write_text(path, "".join(f"{line}\n" for line in keep))


@dataclass(frozen=True)
class TorchFile(RunFile):
    """A torch file of tensors and plain data, loaded with ``weights_only=True``."""

    def load(self, run_dir: PathLike, map_location: Any = "cpu") -> Any:
        """The file's contents; nothing in it can run (see `fileio.load_torch`)."""
        return fileio.load_torch(self.path(run_dir), self.what, map_location)

    def save(self, run_dir: PathLike, obj: Any) -> Path:
        """`torch.save` atomically."""
        return fileio.save_torch(self.path(run_dir), obj)


# --------------------------------------------------------------------------- a run directory

CONFIG = JsonFile("config.json", "run config", "deepreshape train")
CHECKPOINT = TorchFile("checkpoint.pt", "checkpoint", "deepreshape train")
METRICS = JsonLinesFile("metrics.jsonl", "per-epoch metrics", "deepreshape train")
RESULTS = JsonFile("results.json", "run results", "deepreshape train")
CRITICALITY = JsonFile("criticality.json", "criticality result", "deepreshape criticality")
REDUCE = JsonFile("reduce.json", "DeepReDuce summary", "deepreshape reduce")
SNL = JsonFile("snl.json", "SNL summary", "deepreshape snl")
MASK_PHASE = TorchFile("mask_phase.pt", "SNL mask phase", "deepreshape snl")
LOCK = RunFile(".lock", "writer lock", "every writer")
TRAINING_FILES: tuple[RunFile, ...] = (CONFIG, CHECKPOINT, METRICS, RESULTS)
"""What `deepreshape train` writes."""


class PiResults:
    """The secure-inference results of a run: one ``pi-<protocol>-<link>.json`` per
    protocol and link, so measuring over one link never overwrites another; plus an older
    single ``pi.json`` that readers still take."""

    legacy = JsonFile("pi.json", "secure-inference result", "deepreshape pi")
    _name = re.compile(r"pi-([a-z0-9]+)-([a-z0-9.-]+)\.json")

    def file(self, protocol: str, link: str) -> JsonFile:
        """The file of one (protocol, link)."""
        return JsonFile(f"pi-{protocol}-{link}.json", "secure-inference result", "deepreshape pi")

    def path(self, run_dir: PathLike, protocol: str, link: str) -> Path:
        return self.file(protocol, link).path(run_dir)

    def write(self, run_dir: PathLike, protocol: str, link: str, record: dict) -> Path:
        """Store one measurement atomically; other (protocol, link) files are kept."""
        return self.file(protocol, link).write(run_dir, record)

    def key_of(self, filename: str) -> tuple[str, str] | None:
        """(protocol, link) of a result file's name, None for any other name."""
        m = self._name.fullmatch(filename)
        return (m.group(1), m.group(2)) if m else None

    def paths(self, run_dir: PathLike) -> list[Path]:
        """Every result file of `run_dir`, by name, the legacy ``pi.json`` last."""
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            return []
        found = sorted(p for p in run_dir.glob("pi-*.json") if self.key_of(p.name))
        return found + ([self.legacy.path(run_dir)] if self.legacy.exists(run_dir) else [])

    def exists(self, run_dir: PathLike, protocol: str | None = None, link: str | None = None) -> bool:
        """Whether a result (of `protocol` and `link`, when given) is stored."""
        for p in self.paths(run_dir):
            key = self.key_of(p.name)
            if key is None:
                continue
            if (protocol is None or key[0] == protocol) and (link is None or key[1] == link):
                return True
        return False

    def read_all(self, run_dir: PathLike) -> Iterator[tuple[Path, Any, str | None]]:
        """(path, data, note) for every result file; data None with a note when unreadable
        or not an object."""
        for path in self.paths(run_dir):
            data, note = read_optional(path)
            if data is not None and not isinstance(data, dict):
                data, note = None, (f"{path}: present but not a deepreshape pi result "
                                    f"(a {type(data).__name__}); left out")
            yield path, data, note


PI = PiResults()

RUN_FILES: tuple[RunFile, ...] = (CONFIG, CHECKPOINT, METRICS, RESULTS, CRITICALITY, REDUCE, SNL,
                                  MASK_PHASE, PI.legacy, LOCK)
"""Every fixed-name file of a run directory (PI results add one file per protocol, link)."""


# --------------------------------------------------------------------------- a sweep root

SWEEP_STATE = JsonFile("sweep.json", "sweep state", "deepreshape sweep")
SWEEP_TABLE = JsonFile("results.json", "sweep results", "deepreshape sweep report")
SWEEP_CSV = RunFile("results.csv", "sweep results (CSV)", "deepreshape sweep report")
SWEEP_LOCK = RunFile(".sweep.lock", "sweep driver lock", "deepreshape sweep")
SWEEP_RAY_LOG = RunFile(".ray-driver.log", "Ray driver log", "deepreshape sweep --backend ray")

SWEEP_FILES: tuple[RunFile, ...] = (SWEEP_STATE, SWEEP_TABLE, SWEEP_CSV, SWEEP_LOCK,
                                    SWEEP_RAY_LOG)


# --------------------------------------------------------------------------- temporary files


def remove_temp_files(run_dir: PathLike) -> list[Path]:
    """Delete the temporary files that a killed atomic write left behind (call under the
    writer lock); returns what was removed."""
    left = sorted(Path(run_dir).glob(".*.tmp"))
    for p in left:
        p.unlink(missing_ok=True)
    return left
