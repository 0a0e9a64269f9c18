"""Who may do what, and what the server may touch: the one place for the operator's rules.

Everything a browser user types that names a thing on the server (a path, a model class) or a
person (a reviewer's name) goes through this module before the engine acts on it.

The operator sets the rules in the environment of the server process (or the CLI):

===================================  =========================================================
``CARTOGRAPHER_DATA_ROOTS``          folders the app may open, separated by ``os.pathsep``
                                     (``:`` on Linux). Required in team mode.
``CARTOGRAPHER_TRUST_CHECKPOINTS``   ``1`` lets the app unpickle checkpoints fully (runs code
                                     from the file). Off by default; never a browser choice.
``CARTOGRAPHER_ARCHITECTURES``       comma-separated allow-list of model classes for state-dict
                                     checkpoints: ``pkg.mod:Class`` or ``pkg.mod:*``.
``CARTOGRAPHER_TRUSTED_USER_HEADER`` the request header an auth proxy sets to the signed-in
                                     user (e.g. ``X-Forwarded-Email``). Turns on team mode.
``CARTOGRAPHER_ADMINS``              comma-separated identities that are admins.
``CARTOGRAPHER_MAX_FILE_MB``         largest single file the app opens (default 2048).
``CARTOGRAPHER_MAX_IMAGES``          most images in a folder before the app asks (default 200000).
``CARTOGRAPHER_MAX_COLUMNS``         most columns in a table (default 10000).
``CARTOGRAPHER_MAX_JOBS``            background jobs running at once, server-wide (default 2).
``CARTOGRAPHER_MAX_JOBS_PER_USER``   running or queued jobs per user (default 2).
``CARTOGRAPHER_JOB_GRACE_S``         seconds a job runs on after its last tab closed (default 30).
===================================  =========================================================

*Local mode* (no sign-in configured) keeps the single-user behaviour: any readable path, typed
reviewer names. *Team mode* (``st.login`` configured, or a trusted user header) needs data
roots, takes identity only from the sign-in, and enforces roles in the review store.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import stat
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

__all__ = [
    "ADMINS_ENV",
    "ARCHITECTURES_ENV",
    "AccessError",
    "DATA_ROOTS_ENV",
    "MAX_COLUMNS_ENV",
    "MAX_FILE_MB_ENV",
    "MAX_IMAGES_ENV",
    "JOB_GRACE_S_ENV",
    "MAX_JOBS_ENV",
    "MAX_JOBS_PER_USER_ENV",
    "Policy",
    "TRUSTED_USER_HEADER_ENV",
    "TRUST_CHECKPOINTS_ENV",
    "check_architecture",
    "normalize_identity",
    "resolve_data_path",
]

DATA_ROOTS_ENV = "CARTOGRAPHER_DATA_ROOTS"
TRUST_CHECKPOINTS_ENV = "CARTOGRAPHER_TRUST_CHECKPOINTS"
ARCHITECTURES_ENV = "CARTOGRAPHER_ARCHITECTURES"
TRUSTED_USER_HEADER_ENV = "CARTOGRAPHER_TRUSTED_USER_HEADER"
ADMINS_ENV = "CARTOGRAPHER_ADMINS"
MAX_FILE_MB_ENV = "CARTOGRAPHER_MAX_FILE_MB"
MAX_IMAGES_ENV = "CARTOGRAPHER_MAX_IMAGES"
MAX_COLUMNS_ENV = "CARTOGRAPHER_MAX_COLUMNS"
MAX_JOBS_ENV = "CARTOGRAPHER_MAX_JOBS"
MAX_JOBS_PER_USER_ENV = "CARTOGRAPHER_MAX_JOBS_PER_USER"
JOB_GRACE_S_ENV = "CARTOGRAPHER_JOB_GRACE_S"

_TRUE = {"1", "true", "yes", "on"}
# `pkg.mod:Class` or `pkg.mod:Outer.Inner`, optionally followed by a JSON object of kwargs.
_ARCHITECTURE = re.compile(r"^\s*(?P<module>[\w.]+):(?P<name>[\w.]+)\s*(?P<kwargs>\{.*\})?\s*$", re.DOTALL)
_MAX_IDENTITY_CHARS = 200


class AccessError(PermissionError):
    """The operator's rules refuse this. The message is safe to show a browser user: it names
    what they typed, never a server path outside the data roots, and says what to do."""


@dataclass(frozen=True)
class Policy:
    """The operator's rules, read once from the environment (:meth:`from_env`).

    Attributes
    ----------
    data_roots : tuple of Path
        Resolved folders the app may read from; empty means any path (local mode only).
    trust_checkpoints : bool
        Full unpickling of checkpoints is allowed (operator setting).
    architectures : tuple of str
        Allowed model classes, ``"pkg.mod:Class"`` or ``"pkg.mod:*"``.
    trusted_user_header : str or None
        The auth proxy's user header, when the server runs behind one.
    login_configured : bool
        ``st.login`` (OIDC) is configured; the UI passes this in, the engine cannot see it.
    admins : tuple of str
        Normalised identities that are admins.
    max_file_bytes, max_images, max_columns : int
        Caps on what one dataset may bring in.
    max_jobs, max_jobs_per_user : int
        Background work: running at once server-wide; running or queued per user.
    job_grace_seconds : int
        A background job whose every tab has closed is cancelled after this many seconds.
    """

    data_roots: tuple[Path, ...] = ()
    trust_checkpoints: bool = False
    architectures: tuple[str, ...] = ()
    trusted_user_header: str | None = None
    login_configured: bool = False
    admins: tuple[str, ...] = ()
    max_file_bytes: int = 2048 * 2**20
    max_images: int = 200_000
    max_columns: int = 10_000
    max_jobs: int = 2
    max_jobs_per_user: int = 2
    job_grace_seconds: int = 30
    extra: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def team_mode(self) -> bool:
        """A sign-in is configured: identities come from it, roles are enforced."""
        return self.login_configured or bool(self.trusted_user_header)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, login_configured: bool = False) -> "Policy":
        """The rules in ``environ`` (``os.environ`` by default).

        Raises
        ------
        AccessError
            A value cannot be read, or team mode is on without data roots.
        """
        env = os.environ if environ is None else environ
        roots = tuple(Path(part).expanduser().resolve()
                      for part in env.get(DATA_ROOTS_ENV, "").split(os.pathsep) if part.strip())
        policy = cls(
            data_roots=roots,
            trust_checkpoints=env.get(TRUST_CHECKPOINTS_ENV, "").strip().lower() in _TRUE,
            architectures=tuple(part.strip() for part in env.get(ARCHITECTURES_ENV, "").split(",") if part.strip()),
            trusted_user_header=env.get(TRUSTED_USER_HEADER_ENV, "").strip() or None,
            login_configured=login_configured,
            admins=tuple(normalize_identity(part) for part in env.get(ADMINS_ENV, "").split(",") if part.strip()),
            max_file_bytes=_positive_int(env, MAX_FILE_MB_ENV, 2048) * 2**20,
            max_images=_positive_int(env, MAX_IMAGES_ENV, 200_000),
            max_columns=_positive_int(env, MAX_COLUMNS_ENV, 10_000),
            max_jobs=_positive_int(env, MAX_JOBS_ENV, 2),
            max_jobs_per_user=_positive_int(env, MAX_JOBS_PER_USER_ENV, 2),
            job_grace_seconds=_positive_int(env, JOB_GRACE_S_ENV, 30),
        )
        if policy.team_mode and not policy.data_roots:
            raise AccessError(f"Team mode (a sign-in is configured) needs {DATA_ROOTS_ENV}: the folders "
                              "the app may open. Set it before starting the server (docs/DEPLOY.md).")
        return policy


def resolve_data_path(path: str | os.PathLike, policy: Policy, *, what: str = "dataset",
                      allow_dir: bool = True, allow_file: bool = True) -> Path:
    """The real location of a path a user typed, if the operator's rules let the server open it.

    The path is resolved (``~`` expanded, symbolic links followed) and must lie inside one of
    ``policy.data_roots`` when any are set; a link inside a root that points outside is refused.
    In every mode only a regular file (at most ``policy.max_file_bytes``) or, where
    ``allow_dir``, a folder is accepted: a device, pipe or socket never is.

    Parameters
    ----------
    path : str or path-like
        What the user typed.
    policy : Policy
        The operator's rules.
    what : str, default "dataset"
        What the path is for, named in the messages ("vectors file", "checkpoint"…).
    allow_dir, allow_file : bool, default True
        Whether a folder, and a file, are acceptable here.

    Returns
    -------
    Path
        The resolved path; open this one, not the typed one.

    Raises
    ------
    AccessError
        The message names what the user typed and never a server path outside the roots (not
        even a link's target), so it is safe to show in the browser.
    """
    typed = os.fspath(path)
    if not str(typed).strip():
        raise AccessError(f"No {what} path was given.")
    candidate = Path(typed).expanduser()
    try:
        # Not strict: a path outside the roots is refused before anyone learns whether it exists.
        located = candidate.resolve()
    except (OSError, RuntimeError):  # a link loop, or a folder that cannot be searched
        raise AccessError(f"{typed}: cannot be opened as a {what} (a broken or looping link?).") from None
    roots = tuple(root.resolve() for root in policy.data_roots)
    if roots and not any(located == root or located.is_relative_to(root) for root in roots):
        shown = ", ".join(str(root) for root in roots)
        raise AccessError(f"{typed}: outside the data folders this server may open ({shown}). "
                          f"Choose a {what} inside one of them, or ask the operator to add its folder "
                          f"to {DATA_ROOTS_ENV}.")
    try:
        info = located.stat()
    except FileNotFoundError:
        raise AccessError(f"{typed}: no such file or folder. Check the {what} path.") from None
    except OSError:
        raise AccessError(f"{typed}: cannot be read (permission denied?).") from None
    if stat.S_ISDIR(info.st_mode):
        if not allow_dir:
            raise AccessError(f"{typed}: is a folder; a {what} must be a file.")
        return located
    if not stat.S_ISREG(info.st_mode):
        raise AccessError(f"{typed}: is not a regular file (a device, pipe or socket), so it cannot be "
                          f"used as a {what}.")
    if not allow_file:
        raise AccessError(f"{typed}: is a file; a {what} must be a folder.")
    if info.st_size > policy.max_file_bytes:
        raise AccessError(f"{typed}: is larger ({info.st_size:,} bytes) than the "
                          f"{policy.max_file_bytes / 2**20:,.0f} MB this server opens as one file "
                          f"({MAX_FILE_MB_ENV}).")
    return located


def check_architecture(spec: str, policy: Policy, *, trust: bool = False) -> tuple[type, dict]:
    """The model class named by ``spec`` and its keyword arguments, without calling anything.

    ``spec`` is ``"package.module:ClassName"``, optionally followed by a JSON object of
    constructor keyword arguments. A module is imported only when it is already imported, it is
    on the operator's allow-list (``policy.architectures``), or ``trust`` is set (the operator
    vouches for the code: ``--trust-checkpoint`` on the command line,
    ``CARTOGRAPHER_TRUST_CHECKPOINTS`` for the app), because importing a module runs its code.
    When the allow-list is set, a class not on it is refused even if its module is imported.
    The object must be a subclass of ``torch.nn.Module``; attributes are looked up statically,
    so no property or module ``__getattr__`` runs either.

    Parameters
    ----------
    spec : str
        What the user typed.
    policy : Policy
        The operator's rules (``architectures``).
    trust : bool, default False
        The operator allows importing the named module.

    Returns
    -------
    (type, dict)
        The ``torch.nn.Module`` subclass, and the keyword arguments to build it with.

    Raises
    ------
    AccessError
        Malformed, not allowed, not importable, missing, or not a ``torch.nn.Module`` subclass.
    """
    match = _ARCHITECTURE.match(spec or "")
    if not match:
        raise AccessError(f"architecture '{spec}' is not of the form \"package.module:ClassName\" or "
                          '"package.module:ClassName{...json...}".')
    module_name, name = match["module"], match["name"]
    try:
        kwargs = json.loads(match["kwargs"]) if match["kwargs"] else {}
    except json.JSONDecodeError as exc:
        raise AccessError(f"the keyword arguments in architecture '{spec}' are not valid JSON ({exc.msg}).") from None
    if not isinstance(kwargs, dict):
        raise AccessError(f"the keyword arguments in architecture '{spec}' must be a JSON object.")
    listed = f"{module_name}:{name}" in policy.architectures or f"{module_name}:*" in policy.architectures
    if policy.architectures and not listed:
        raise AccessError(f"'{module_name}:{name}' is not on this server's list of allowed architectures "
                          f"({', '.join(policy.architectures)}). Ask the operator to add it to {ARCHITECTURES_ENV}.")
    module = sys.modules.get(module_name)
    if module is None:
        if not (listed or trust):
            raise AccessError(
                f"module '{module_name}' is not loaded, and importing it would run its code. Ask the "
                f"operator to allow '{module_name}:{name}' in {ARCHITECTURES_ENV}, or pass "
                "--trust-checkpoint on the command line if you trust that module.")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise AccessError(f"cannot import module '{module_name}' for the architecture ({exc}). Make it "
                              "importable (install it or add it to PYTHONPATH).") from None
    target: object = module
    for part in name.split("."):
        try:
            target = inspect.getattr_static(target, part)
        except AttributeError:
            # A lazily loaded package (transformers) provides its classes through the module's
            # __getattr__: code of a module that is already imported or allowed, never called with
            # the user's arguments.
            found = _module_attribute(target, part)
            if found is None:
                raise AccessError(f"module '{module_name}' has no '{name}'.") from None
            target = found
    import torch  # here, not at import time: the app reads the policy without loading torch

    if not (inspect.isclass(target) and issubclass(target, torch.nn.Module)):
        kind = "class" if inspect.isclass(target) else type(target).__name__
        raise AccessError(f"'{module_name}:{name}' is a {kind}, not a subclass of torch.nn.Module, so it "
                          "cannot be a model architecture. Nothing was called.")
    return target, kwargs


def _module_attribute(target: object, name: str) -> object | None:
    if not inspect.ismodule(target):
        return None
    try:
        return getattr(target, name, None)
    except Exception:  # a lazy module's import of the attribute failed
        return None


def normalize_identity(name: object) -> str:
    """A person's identity as stored and compared: Unicode NFKC, case-folded, trimmed.

    Look-alikes are refused rather than kept apart: a name that mixes letters of several scripts
    (a Cyrillic "а" inside "alice") raises :class:`AccessError`.

    Raises
    ------
    AccessError
        Empty, too long, control characters, or letters of mixed scripts.
    """
    if not isinstance(name, str):
        raise AccessError(f"A name must be text, not {type(name).__name__}.")
    folded = unicodedata.normalize("NFKC", name).casefold().strip()
    folded = unicodedata.normalize("NFKC", folded)  # case folding can leave non-NFKC forms
    if not folded:
        raise AccessError("A name must not be empty.")
    if len(folded) > _MAX_IDENTITY_CHARS:
        raise AccessError(f"A name has at most {_MAX_IDENTITY_CHARS} characters.")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") for ch in folded):
        raise AccessError("A name must not contain control or invisible characters.")
    scripts = {_script(ch) for ch in folded if ch.isalpha()}
    if len(scripts) > 1:
        raise AccessError(f"The name {name!r} mixes letters of several scripts ({', '.join(sorted(scripts))}), "
                          "so it could pass for another person's name; use one script.")
    return folded


def _script(ch: str) -> str:
    """The script of a letter, from its Unicode name (LATIN, CYRILLIC, GREEK, CJK, …)."""
    name = unicodedata.name(ch, "")
    word = name.split(" ", 1)[0] if name else "UNKNOWN"
    return "CJK" if word in ("CJK", "HIRAGANA", "KATAKANA") else word


def _positive_int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise AccessError(f"{key} must be a whole number, got {raw!r}.") from None
    if value < 1:
        raise AccessError(f"{key} must be at least 1, got {value}.")
    return value
