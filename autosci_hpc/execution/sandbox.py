"""The sandbox around trial code: what a training step (or a smoke run) can see, and nothing more.

Trial code is written, or edited, by a model: every byte of it is hostile. Outside a sandbox it
can read whatever the user can: the campaign database (every trial's held-out score), other trials'
folders, the snapshot store, the API key file, and `/proc/<pid>/environ` of the processes that run
it. Inside one (`wrap`) it sees:

- its own trial folder, read-write, always mounted at `/sandbox/trial` (so a trial and a smoke run
  see the same paths and cannot be told apart by them);
- its visible data, read-only, at `/sandbox/data`;
- the Python environment and the system (`/usr`, the venv and its base interpreter, this package's
  source), read-only, and a minimal `/etc`;
- a private `/tmp` (also `HOME`), a fresh `/proc` of its own PID namespace (it sees no other
  process), no network unless the task declares it, a new session (no terminal to inject into);
  the training step of a trial on several nodes (task.yaml `nodes`) shares the host's network and
  shows the host's name, since its ranks meet those of the trial's other nodes over it (torch finds
  the address to listen on through the host name); the evaluator never has a network. The ranks of a
  trial on one node meet on 127.0.0.1 inside its one sandbox, with no network;
- an environment built from an allow-list (no key, no path to one, no trial id).

`bwrap` (bubblewrap, unprivileged user namespaces) is the sandbox of choice; `apptainer` builds the
same picture with `apptainer exec --containall` where a cluster offers that instead; `none` runs the
program as it is (and the campaign says so). `auto` picks the strongest that works here, found by
really running a sandboxed `true` (user namespaces may be disabled on a host that has bwrap).

The wrap is applied where the program's process is started (on the compute node, inside SLURM
array tasks too): `argv, env = wrap(argv, env, policy)`. Host paths in `argv` and `env` are
rewritten to their sandbox paths; the caller keeps its own `cwd` (a host path that exists).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Optional, Sequence

from pydantic import BaseModel, Field

from ..config import ConfigError
from ..layout import CampaignLayout

MODES: tuple[str, ...] = ("auto", "bwrap", "apptainer", "none")
#: Strongest first: what `auto` tries.
PREFERENCE: tuple[str, ...] = ("bwrap", "apptainer")

TRIAL_MOUNT = "/sandbox/trial"
DATA_MOUNT = "/sandbox/data"
WORK_DIR = "work"
SANDBOX_HOSTNAME = "trial"
#: Files of the step's folder the harness reads after the step (its log): mounted read-only onto
#: themselves, so the program can neither write them nor swap them for a link to a host file (the
#: harness, outside the sandbox, would follow it: a key file read by the harness on the program's behalf).
PROTECTED_FILES = ("trial.log", "evaluate.log")

#: Variables a sandboxed program may inherit (exact names, then prefixes). Everything else is dropped:
#: the program needs no key, no path to one, no trial id, no scheduler internals.
ENV_ALLOW = frozenset({
    "PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONHASHSEED", "PYTHONPATH", "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "OMP_NUM_THREADS",
    "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "TOKENIZERS_PARALLELISM",
    "AUTOSCI_SEED", "AUTOSCI_METRICS", "AUTOSCI_OVERRIDES", "AUTOSCI_DATA", "AUTOSCI_ARTIFACTS",
    # the evaluator's own (the training step's environment never carries them)
    "AUTOSCI_SEALED", "AUTOSCI_PROGRAM", "AUTOSCI_SPLIT",
})
ENV_ALLOW_PREFIXES = ("AUTOSCI_EVAL_",)
#: Files of /etc a Python program (and its shared libraries) may need; nothing else of /etc is shown.
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "passwd", "group", "nsswitch.conf", "localtime",
             "hosts", "alternatives", "ssl", "ca-certificates", "mime.types", "os-release")
NETWORK_ETC = ("resolv.conf", "host.conf", "gai.conf")
SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
GPU_DEVICE_PREFIXES = ("nvidia", "dri")
PROBE_TIMEOUT_S = 20.0


class SandboxError(ConfigError):
    """The sandbox asked for cannot be built here; one line saying why and what to do."""


@dataclass(frozen=True)
class Policy:
    """What one sandboxed step may see.

    `folder` is the step's own folder (read-write, at `/sandbox/trial`); `data` its visible data
    (read-only, at `/sandbox/data`); `read_only` more host paths shown at their own path (an
    evaluator's inputs, say). `network` only where the task declares it.
    """

    mode: str
    folder: str
    data: str = ""
    read_only: tuple[str, ...] = ()
    network: bool = False
    #: apptainer only: the image (a .sif file or sandbox folder) the step runs in.
    image: str = ""
    #: Host paths that must never be visible (the key file, the campaign database): `wrap` refuses a
    #: policy whose mounts would include one.
    forbidden: tuple[str, ...] = ()
    gpu: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    #: Where the step starts, relative to its folder (the training step: the program's copy).
    workdir: str = WORK_DIR
    protected: tuple[str, ...] = PROTECTED_FILES
    #: The host name the step sees (bwrap): "trial", or the host's own for ranks that meet other nodes'.
    hostname: str = SANDBOX_HOSTNAME


class SandboxSettings(BaseModel):
    """The campaign's sandbox as a trial request carries it to the node (pickled by submitit).

    `mode` is already resolved (never `auto`): the coordinator decided, and recorded, which sandbox
    its trials run in; a node where that sandbox does not work fails the trial instead of running it
    unprotected."""

    mode: str = "none"
    image: str = ""
    network: bool = False
    forbidden: list[str] = Field(default_factory=list)

    def policy(self, folder: str, data: str = "", read_only: Sequence[str] = (), workdir: str = WORK_DIR,
               *, network: bool = False, hostname: str = SANDBOX_HOSTNAME,
               protected: Sequence[str] = PROTECTED_FILES) -> "Policy":
        """One step's policy; `network` adds the host's network to what the task declared (the training
        step of a trial on several nodes), `hostname` and `protected` as in `Policy`."""
        policy = trial_policy(self.mode, folder, data, network=self.network or network, image=self.image,
                              read_only=read_only, forbidden=self.forbidden, workdir=workdir)
        return replace(policy, hostname=hostname, protected=tuple(protected))


# ---- the environment ---------------------------------------------------------------------------------


def python_roots() -> list[str]:
    """Host folders the Python interpreter, its libraries and this package live in (read-only)."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             str(Path(sys.executable).resolve().parent.parent), str(Path(__file__).resolve().parents[1])}
    # library folders the interpreter was pointed at beyond its prefixes (a .pth file, a user site)
    libraries = {p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and Path(p).is_dir()}
    roots |= {p for p in libraries if not any(Path(p).is_relative_to(r) for r in roots if r)}
    return sorted(r for r in roots if r and Path(r).exists() and Path(r) != Path("/"))


def clean_env(env: dict[str, str], path_map: dict[str, str]) -> dict[str, str]:
    """The allow-listed variables, host paths rewritten to sandbox paths, HOME and TMPDIR private."""
    out = {k: remap(v, path_map) for k, v in env.items()
           if k in ENV_ALLOW or k.startswith(ENV_ALLOW_PREFIXES)}
    out.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    out.update(HOME="/tmp", TMPDIR="/tmp", USER="trial", LOGNAME="trial")
    return out


def remap(text: str, path_map: dict[str, str]) -> str:
    """`text` with each host path prefix replaced by its sandbox path (longest first)."""
    for host in sorted(path_map, key=len, reverse=True):
        if host and host in text:
            text = text.replace(host, path_map[host])
    return text


def _path_map(policy: Policy) -> dict[str, str]:
    out = {str(Path(policy.folder).absolute()): TRIAL_MOUNT}
    if policy.data:
        out[str(Path(policy.data).absolute())] = DATA_MOUNT
    return out


def _inside(path: str, roots: Iterable[str]) -> Optional[str]:
    real = Path(path).expanduser().resolve()
    for root in roots:
        if root and real.is_relative_to(Path(root).resolve()):
            return root
    return None


def exposed_paths(policy: Policy) -> list[str]:
    """Every host path the sandbox shows (read-only or read-write)."""
    return [policy.folder] + ([policy.data] if policy.data else []) + list(policy.read_only) + python_roots()


def check_forbidden(policy: Policy) -> None:
    """Refuse a policy that would show a forbidden path (a key file inside the venv, say)."""
    exposed = exposed_paths(policy)
    for secret in policy.forbidden:
        if not secret:
            continue
        root = _inside(secret, exposed)
        if root is not None:
            raise SandboxError(f"{secret} lies inside {root}, which sandboxed trial code can read; move it "
                               "out of the Python environment, the package source and the campaign folder")


# ---- bubblewrap -----------------------------------------------------------------------------------------


def _system_args() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in SYSTEM_DIRS:
        path = Path(name)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), name]
        elif path.is_dir():
            args += ["--ro-bind", name, name]
    return args


def _etc_args(network: bool) -> list[str]:
    args = []
    for name in ETC_FILES + (NETWORK_ETC if network else ()):
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    return args


def _gpu_args() -> list[str]:
    dev = Path("/dev")
    args = []
    try:
        entries = sorted(dev.iterdir())
    except OSError:
        return []
    for entry in entries:
        if entry.name.startswith(GPU_DEVICE_PREFIXES):
            args += ["--dev-bind-try", str(entry), str(entry)]
    if args:
        # The GPU driver's user-space library reads device topology from /sys (read-only here).
        args += ["--ro-bind-try", "/sys", "/sys"]
    return args


def bwrap_argv(argv: Sequence[str], policy: Policy, bwrap: str = "bwrap") -> list[str]:
    """The bubblewrap command line that runs `argv` (already in sandbox paths) under `policy`."""
    folder = str(Path(policy.folder).absolute())
    args = [bwrap, "--unshare-all"] + (["--share-net"] if policy.network else []) + [
        "--die-with-parent", "--new-session", "--hostname", policy.hostname,
        "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/run", "--tmpfs", "/var/tmp",
        "--dir", "/sandbox"]
    args += _system_args() + _etc_args(policy.network)
    for root in python_roots():
        args += ["--ro-bind", root, root]
    for extra in policy.read_only:
        args += ["--ro-bind", str(Path(extra).absolute()), str(Path(extra).absolute())]
    args += ["--bind", folder, TRIAL_MOUNT]
    for name in policy.protected:
        args += ["--ro-bind", str(Path(folder) / name), f"{TRIAL_MOUNT}/{name}"]
    if policy.data:
        args += ["--ro-bind", str(Path(policy.data).absolute()), DATA_MOUNT]
    if policy.gpu:
        args += _gpu_args()
    args += ["--chdir", f"{TRIAL_MOUNT}/{policy.workdir}", "--"]
    return args + list(argv)


# ---- apptainer -----------------------------------------------------------------------------------------


def apptainer_argv(argv: Sequence[str], policy: Policy, apptainer: str = "apptainer") -> list[str]:
    """`apptainer exec --containall` with the same mounts as the bubblewrap sandbox.

    --containall gives a private /tmp, IPC and PID namespace and an empty environment (the variables
    arrive as APPTAINERENV_*, see `wrap`); --no-home and --no-mount keep the user's home and the
    site's default binds out; `--net --network none` cuts the network unless the task declares it.
    """
    if not policy.image:
        raise SandboxError("executor.sandbox=apptainer needs executor.sandbox_image (a .sif image holding "
                           "the trial's Python environment)")
    folder = str(Path(policy.folder).absolute())
    args = [apptainer, "exec", "--containall", "--no-home", "--no-mount", "home,cwd,bind-paths",
            "--no-privs", "--writable-tmpfs"]
    if not policy.network:
        args += ["--net", "--network", "none"]
    binds = [f"{root}:{root}:ro" for root in python_roots()]
    binds += [f"{Path(p).absolute()}:{Path(p).absolute()}:ro" for p in policy.read_only]
    binds.append(f"{folder}:{TRIAL_MOUNT}:rw")
    binds += [f"{Path(folder) / name}:{TRIAL_MOUNT}/{name}:ro" for name in policy.protected]
    if policy.data:
        binds.append(f"{Path(policy.data).absolute()}:{DATA_MOUNT}:ro")
    for bind in binds:
        args += ["--bind", bind]
    if policy.gpu and any(Path("/dev").glob("nvidia*")):
        args.append("--nv")
    args += ["--pwd", f"{TRIAL_MOUNT}/{policy.workdir}", policy.image]
    return args + list(argv)


# ---- detection -----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def probe(mode: str, image: str = "") -> tuple[bool, str]:
    """(works, why): really runs `true` in the sandbox with the mounts a trial gets. Cached per process."""
    if mode == "none":
        return True, "no sandbox: trial code runs with the user's rights"
    tool = "bwrap" if mode == "bwrap" else "apptainer" if mode == "apptainer" else ""
    if not tool:
        return False, f"unknown sandbox '{mode}'"
    exe = shutil.which(tool)
    if exe is None:
        package = ("Debian/Ubuntu package 'bubblewrap'" if tool == "bwrap"
                   else "the apptainer module of the cluster")
        return False, f"{tool} is not installed (install {package})"
    if mode == "apptainer" and not image:
        return False, "apptainer is installed, but executor.sandbox_image names no image"
    with tempfile.TemporaryDirectory(prefix="autosci-probe-") as tmp:
        (Path(tmp) / WORK_DIR).mkdir()
        for name in PROTECTED_FILES:
            (Path(tmp) / name).touch()
        policy = Policy(mode=mode, folder=tmp, image=image, gpu=False)
        argv = (bwrap_argv if mode == "bwrap" else apptainer_argv)(["true"], policy, exe)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                                  env=clean_env(dict(os.environ), {}))
        except (OSError, subprocess.SubprocessError) as exc:
            return False, f"{tool} could not run: {exc}"
    if proc.returncode != 0:
        why = (proc.stderr or proc.stdout).strip().splitlines()
        last = why[-1] if why else f"exit status {proc.returncode}"
        return False, f"{tool} is installed but cannot build a sandbox here: {last}"
    return True, f"{exe} works (own PID namespace, no network, read-only system)"


def resolve(mode: str, image: str = "") -> tuple[str, str]:
    """(the sandbox to use, why): `auto` becomes the strongest that works here (or `none`, saying why);
    an explicit mode that does not work is a `SandboxError`."""
    if mode not in MODES:
        raise SandboxError(f"executor.sandbox: unknown sandbox '{mode}' (choose one of {', '.join(MODES)})")
    if mode == "auto":
        reasons = []
        for candidate in PREFERENCE:
            ok, why = probe(candidate, image)
            if ok:
                return candidate, why
            reasons.append(why)
        return "none", "no sandbox works here: " + "; ".join(reasons)
    ok, why = probe(mode, image)
    if not ok:
        raise SandboxError(f"executor.sandbox={mode}: {why}")
    return mode, why


def report() -> list[tuple[str, bool, str]]:
    """(sandbox, works, why) for each real sandbox: what `autosci doctor` prints."""
    image = os.environ.get("AUTOSCI_SANDBOX_IMAGE", "")
    return [(mode, *probe(mode, image)) for mode in PREFERENCE]


# ---- the wrap ------------------------------------------------------------------------------------------


def wrap(argv: Sequence[str], env: dict[str, str], policy: Policy) -> tuple[list[str], dict[str, str]]:
    """(argv, env) that run the program under `policy`. `none` passes both through unchanged.

    The caller still starts the process itself (in its own session, with its own time limit and
    process-group kill: killing the outer bwrap takes the whole PID namespace down with it)."""
    if policy.mode == "none":
        return list(argv), dict(env)
    if policy.mode not in ("bwrap", "apptainer"):
        raise SandboxError(f"unknown sandbox '{policy.mode}' (choose one of {', '.join(MODES)})")
    check_forbidden(policy)
    ok, why = probe(policy.mode, policy.image)
    if not ok:
        # Never fall back silently: a campaign that asked for a sandbox gets one or fails loudly.
        raise SandboxError(f"sandbox {policy.mode} is not available on {os.uname().nodename}: {why}")
    for name in policy.protected:  # they must exist to be mounted (the harness truncates them, not replaces)
        protected = Path(policy.folder) / name
        if protected.is_symlink():
            protected.unlink()
        protected.parent.mkdir(parents=True, exist_ok=True)
        protected.touch()
    paths = _path_map(policy)
    inner = [remap(a, paths) for a in argv]
    inner_env = clean_env({**env, **policy.extra_env}, paths)
    if policy.mode == "bwrap":
        return bwrap_argv(inner, policy, shutil.which("bwrap") or "bwrap"), inner_env
    outer = {k: v for k, v in env.items() if k in ("PATH", "LANG", "LC_ALL", "APPTAINER_CACHEDIR")}
    outer.update({f"APPTAINERENV_{k}": v for k, v in inner_env.items() if k != "PATH"})
    return apptainer_argv(inner, policy, shutil.which("apptainer") or "apptainer"), outer


def read_no_link(path: Path, folder: Path, limit: int = 10_000_000) -> bytes:
    """A file the step wrote, read by the harness without following a link the step planted (the harness
    runs outside the sandbox: a link to a host file would make it read that file for the program).
    `OSError` when the path, or a folder on its way inside `folder`, is a link, or is not a regular file."""
    folder = Path(folder).absolute()
    path = Path(path).absolute()
    current = folder
    for part in path.relative_to(folder).parts:
        current = current / part
        if current.is_symlink():
            raise OSError(f"{current.relative_to(folder)} is a link, which is not followed")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        if not os.path.isfile(path):
            raise OSError(f"{path.name} is not a regular file")
        return os.read(fd, limit)
    finally:
        os.close(fd)


def trial_policy(mode: str, folder: str, data: str = "", *, network: bool = False, image: str = "",
                 read_only: Sequence[str] = (), forbidden: Sequence[str] = (), workdir: str = WORK_DIR) -> Policy:
    """The policy of a step: its folder read-write, its visible data read-only."""
    return Policy(mode=mode, folder=str(Path(folder).absolute()),
                  data=str(Path(data).absolute()) if data else "", network=network, image=image,
                  read_only=tuple(read_only), forbidden=tuple(forbidden), workdir=workdir)



def campaign_sandbox(config: object, campaign_folder: Path, network: bool = False) -> tuple[SandboxSettings, str]:
    """(the settings every trial of the campaign carries, why): `executor.sandbox` resolved here.

    Refused, before anything is created: a sandbox that does not work, and a key file that trial code
    would see (inside the Python environment, the package source or the campaign folder). The key
    file's path itself never travels with a trial request. `network`: the task declared it needs one
    (task.yaml `network: true`); without that, trial code has none."""
    executor = getattr(config, "executor")
    llm = getattr(config, "llm")
    folder = Path(campaign_folder).absolute()
    mode, why = resolve(executor.sandbox, executor.sandbox_image)
    if llm.api_key_file and Path(llm.api_key_file).expanduser().exists():
        key_file = str(Path(llm.api_key_file).expanduser().absolute())
        shown = [str(folder)] + (python_roots() if mode != "none" else [])
        root = _inside(key_file, shown)
        if root is not None:
            raise SandboxError(f"llm.api_key_file: {key_file} lies inside {root}, which trial code can read; "
                               "keep the key file outside the campaign folder and the Python environment "
                               "(for example ~/.config/autosci/key, mode 0600)")
    return SandboxSettings(mode=mode, image=executor.sandbox_image, network=network,
                           forbidden=[str(CampaignLayout(folder).database)]), why
