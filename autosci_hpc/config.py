"""Campaign configuration: package defaults, then the YAML file, then `key=value` overrides.

Loading goes through OmegaConf (so YAML and dotlists behave as Hydra users expect) and validation
through pydantic. Every key is checked against the schema *before* anything is created, and a bad
key or value produces one `ConfigError` naming the file (or the command line), the dotted key and
what is allowed.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union, get_args, get_origin

from omegaconf import OmegaConf
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from .files import yaml_problem


class ConfigError(ValueError):
    """A configuration problem, worded for the person who wrote the file."""


class _Section(BaseModel):
    # Infinity and NaN are refused: a budget of .inf is no budget, and neither survives a JSON record.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _null_is_the_default(cls, data: Any) -> Any:
        """`key=null` (or `key: null` in a file) puts a setting back to its default: how an optional
        setting that an example file sets (`executor.slurm.account`) is unset from the command line."""
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {k: v for k, v in data.items()
                if not (v is None and k in fields and not fields[k].is_required()
                        and fields[k].get_default(call_default_factory=True) is not None)}


class CampaignSection(_Section):
    name: str = "campaign"
    #: Campaign folder; empty means `<root>/<name>-<timestamp>`.
    folder: str = ""
    root: str = "runs"
    seed: int = 0


def nodes_problem(gpus: int, nodes: int) -> str:
    """Why a trial of `gpus` GPUs cannot span `nodes` nodes, in one line; "" when it can. Each node holds
    the same share of the trial's GPUs (gpus / nodes), as each node of a Slurm job gets the same gres."""
    if nodes <= 1 or (gpus > 0 and gpus % nodes == 0):
        return ""
    return (f"a trial on {nodes} nodes needs gpus, its GPUs in all, to be a positive multiple of {nodes} "
            f"(gpus / nodes on each node), not {gpus}")


class TaskSection(_Section):
    #: A task folder holding task.yaml (absolute, or relative to the working directory).
    path: str = "tasks/diabetes"
    #: Override of the task's per-trial wall-clock limit, in seconds (0: the task's own).
    time_limit_s: float = Field(default=0.0, ge=0)
    #: The starting champion: overrides of the task's config.yaml for the baseline, e.g. the champion
    #: of an earlier campaign (`autosci show` prints its overrides) to keep improving a strong program.
    overrides: dict[str, Any] = Field(default_factory=dict)
    #: GPUs one trial uses, in all (null: the task's own `gpus`). Set when the campaign starts.
    gpus: Optional[int] = Field(default=None, ge=0)
    #: Nodes one trial spans (null: the task's own `nodes`); `gpus` is spread evenly over them. Set when the
    #: campaign starts; above 1 only with executor.kind=slurm.
    nodes: Optional[int] = Field(default=None, ge=1)

    @field_validator("nodes")
    @classmethod
    def _gpus_per_node(cls, nodes: Optional[int], info: ValidationInfo) -> Optional[int]:
        gpus = info.data.get("gpus")
        problem = nodes_problem(gpus, nodes) if nodes is not None and gpus is not None else ""
        if problem:
            raise ValueError(problem)
        return nodes


#: The most agents a campaign runs (all teams' analysts and experimenters together).
MAX_AGENTS = 256


class CoordinationSection(_Section):
    mode: Literal["decentralized", "single", "central"] = "decentralized"
    teams: int = Field(default=2, ge=1, le=64)
    analysts_per_team: int = Field(default=2, ge=1, le=MAX_AGENTS)
    experimenters_per_team: int = Field(default=2, ge=1, le=MAX_AGENTS)
    discussion_rounds: int = Field(default=2, ge=1)
    #: A team whose last N experiments brought no improvement re-opens discussion.
    stagnation_window: int = Field(default=10, ge=1)
    #: Proposals a team keeps ready in its queue.
    queue_depth: int = Field(default=2, ge=1)
    #: Critiques each proposal receives before it may enter a queue.
    critics_per_proposal: int = Field(default=2, ge=1)
    #: Non-improving outcomes of one direction before it is registered as a dead end.
    dead_end_after: int = Field(default=2, ge=1)
    #: An analyst whose last N proposals on the current champion were all refused stops proposing
    #: until a new champion or a re-opened discussion (an exhausted search space then ends the campaign).
    max_rejections_in_a_row: int = Field(default=10, ge=1)
    poll_interval_s: float = Field(default=0.5, gt=0)

    #: Agents run as their own OS processes (what `autosci coordinate` does) or inline, one step
    #: each per coordinator tick (what `autosci run` does: deterministic with the offline policy).
    agent_processes: bool = False
    #: An agent process silent for this long is taken for hung and restarted.
    agent_timeout_s: float = Field(default=600.0, gt=0)

    @model_validator(mode="after")
    def _roster_fits(self) -> "CoordinationSection":
        agents = self.teams * (self.analysts_per_team + self.experimenters_per_team)
        if agents > MAX_AGENTS:
            raise ValueError(f"teams x (analysts_per_team + experimenters_per_team) is {agents} agents; at most "
                             f"{MAX_AGENTS} (each is a process, or a step of every tick, of the coordinator)")
        return self


class PromotionSection(_Section):
    #: Seeds a candidate is run on before the first decision (seed 0 screens, the rest replicate).
    seeds: int = Field(default=3, ge=1)
    #: paired (default): a one-sided test on the paired differences (candidate seed k against the
    #: champion's seed k) against the runs' pooled spread, with a minimum effect calibrated from it, adding seeds
    #: while the result is inconclusive; mean: the mean difference exceeds `min_delta`; ttest: that and
    #: a one-sided paired t-test at `alpha`, on the first `seeds` seeds only.
    rule: Literal["paired", "mean", "ttest"] = "paired"
    #: Minimum improvement of the mean over seeds (in the metric's units).
    min_delta: float = Field(default=0.0, ge=0)
    #: A candidate is replicated only if its first seed beats the champion's by this much.
    screen_delta: float = Field(default=0.0, ge=0)
    #: Significance level. For `paired` it is the chance, summed over all its looks (Bonferroni), that a
    #: candidate no better than the champion is promoted; for `ttest` the level of its single test.
    alpha: float = Field(default=0.01, gt=0, lt=1)
    #: `paired`: the minimum effect, in standard deviations of one program's runs (pooled from the compared
    #: runs and the baseline's replicates; the larger of this and `min_delta` applies).
    min_effect_sigmas: float = Field(default=0.5, ge=0)
    #: `paired`: the most seeds a candidate runs on (at least `seeds`); while inconclusive it gets
    #: `seed_step` more at a time.
    max_seeds: int = Field(default=11, ge=1)
    seed_step: int = Field(default=2, ge=1)
    #: `paired`: stop adding seeds once the gain is below the minimum effect with this one-sided
    #: confidence (1 - futility); higher stops hopeless candidates sooner. 0.5 stops as soon as the mean
    #: gain is below the minimum effect: a third fewer trials per null candidate than 0.2 at the same
    #: false-promotion rate and nearly the same power on a 2-sigma gain (the rules benchmark).
    futility: float = Field(default=0.5, gt=0, lt=1)
    #: Re-run the champion on every seed of each replication, next to the candidate, instead of reusing
    #: its stored runs: for metrics that depend on time or hardware (a time-budgeted training run).
    remeasure_champion: bool = False
    #: A candidate that finishes after another champion was promoted has its change re-applied to the new
    #: champion and measured again there, where it applies cleanly; false: it is only concluded as stale.
    rebase: bool = True

    @model_validator(mode="after")
    def _seeds_fit(self) -> "PromotionSection":
        if self.rule == "ttest" and self.seeds < 3:
            raise ValueError("rule 'ttest' needs seeds >= 3")
        return self


class BudgetSection(_Section):
    #: All trials count: baseline, candidates and replicates.
    trials: int = Field(default=40, ge=1)
    wall_clock_min: float = Field(default=60.0, gt=0)
    gpu_hours: Optional[float] = Field(default=None, gt=0)
    llm_dollars: Optional[float] = Field(default=None, gt=0)
    #: No new candidate once this many trials in a row have failed (the most recent ones to finish; a
    #: cancelled trial does not count; null: never). A broken environment (a node without its GPU, a full
    #: disk, a missing module) fails every trial, and would otherwise spend the whole budget on failures.
    failures_in_a_row: Optional[int] = Field(default=20, ge=1)


class LocalExecutorSection(_Section):
    #: CPU trials running at once; 0 means the number of CPUs.
    max_concurrent: int = Field(default=0, ge=0)
    #: The machine's GPUs, for tasks whose trials use GPUs (task.yaml `gpus`): auto = the visible ones
    #: (CUDA_VISIBLE_DEVICES, else nvidia-smi, else none), a count (the first N), or a list of device ids.
    gpus: Union[Literal["auto"], int, list[Union[int, str]]] = "auto"
    #: Trials sharing one GPU, started together as a gang (execution/gpus.py): fixed for a campaign,
    #: since sharing changes what a time-budgeted trial measures.
    trials_per_gpu: int = Field(default=1, ge=1)


class SlurmExecutorSection(_Section):
    partition: str = ""
    account: str = ""
    qos: str = ""
    gres: str = ""
    #: CPUs of one trial's job, for all its ranks together: a trial of N GPUs is one task whose training
    #: step runs N processes on these CPUs (give each rank its data loader's share). A trial on several
    #: nodes is one task per node, each with these CPUs for the ranks of its node; `mem_gb` is per node too.
    cpus_per_task: int = Field(default=1, ge=1)
    mem_gb: float = Field(default=4.0, gt=0)
    time_min: int = Field(default=60, ge=1)
    array_parallelism: int = Field(default=16, ge=1)
    max_concurrent: int = Field(default=16, ge=1)
    setup: list[str] = Field(default_factory=list)
    #: Any other sbatch option, without the leading --. On the command line a mapping replaces this
    #: one (`executor.slurm.additional={}` clears it); `executor.slurm.additional.constraint=null`
    #: removes one option.
    additional: dict[str, Any] = Field(default_factory=dict)

    @field_validator("additional")
    @classmethod
    def _drop_unset(cls, value: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in value.items() if v is not None}


class ExecutorSection(_Section):
    kind: Literal["local", "slurm"] = "local"
    #: Seconds a finished job may take to show its result file (shared-filesystem latency).
    result_grace_s: float = Field(default=5.0, ge=0)
    #: Retries, same seed, of a trial lost to the infrastructure (node failure, preemption).
    max_retries: int = Field(default=2, ge=0)
    #: What trial code (and the experimenters' smoke runs) run in: auto = the strongest sandbox that
    #: works on this machine (bwrap, then apptainer, else none, which the campaign's status says).
    sandbox: Literal["auto", "bwrap", "apptainer", "none"] = "auto"
    #: apptainer only: the image (.sif) holding the trial's Python environment.
    sandbox_image: str = ""
    local: LocalExecutorSection = Field(default_factory=LocalExecutorSection)
    slurm: SlurmExecutorSection = Field(default_factory=SlurmExecutorSection)


class ModelPrice(_Section):
    """USD per million tokens. Cache prices default to Anthropic's ratios (read 0.1x, write 1.25x input)."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: Optional[float] = Field(default=None, ge=0)
    cache_write: Optional[float] = Field(default=None, ge=0)


def _default_prices() -> dict[str, ModelPrice]:
    # Anthropic list prices (check https://www.anthropic.com/pricing); a dated id such as
    # claude-sonnet-4-5-20250929 takes the price of its longest matching prefix.
    table = {
        "claude-opus-4-6": (5.0, 25.0), "claude-opus-4-5": (5.0, 25.0),
        "claude-sonnet-4-6": (3.0, 15.0), "claude-sonnet-4-5": (3.0, 15.0), "claude-sonnet-4": (3.0, 15.0),
        "claude-haiku-4-5": (1.0, 5.0),
    }
    return {name: ModelPrice(input=i, output=o) for name, (i, o) in table.items()}


def price_of(prices: dict[str, ModelPrice], model: str) -> Optional[ModelPrice]:
    """The price of `model`: an exact entry, else the longest entry that prefixes it."""
    if model in prices:
        return prices[model]
    matches = [name for name in prices if model.startswith(name)]
    return prices[max(matches, key=len)] if matches else None


class ServeSection(_Section):
    """An open model the coordinator serves on the cluster as a Slurm job of its own (vLLM, SGLang).

    `command` is the server's command line, with `{port}` where the port goes (the job chooses a
    free one) and optionally `{python}`; for example `vllm serve Qwen/Qwen2.5-7B-Instruct --port {port}
    --enable-auto-tool-choice --tool-call-parser hermes`. Empty: nothing is served (the default).
    """

    command: str = ""
    partition: str = ""
    account: str = ""
    gres: str = ""
    cpus_per_task: int = Field(default=4, ge=1)
    mem_gb: float = Field(default=32.0, gt=0)
    time_min: int = Field(default=1440, ge=1)
    #: Lines run in the job before the server (module loads, a virtual environment).
    setup: list[str] = Field(default_factory=list)
    #: Seconds from submission until the server must answer (queueing and loading weights included).
    startup_timeout_s: float = Field(default=1800.0, gt=0)
    #: Times a server job that died is submitted again before the campaign stops.
    max_restarts: int = Field(default=3, ge=0)
    #: Seconds between the coordinator's checks that the server's job is alive (one squeue call).
    check_interval_s: float = Field(default=30.0, gt=0)


class LLMSection(_Section):
    #: offline: the deterministic offline agents; random: random search over the task's axes (a
    #: baseline, no model); anthropic / openai: LLM agents.
    backend: Literal["offline", "random", "anthropic", "openai"] = "offline"
    #: Seconds the offline and random policies wait per decision: rehearses a campaign's timing with
    #: an LLM's latency (the slot-utilization benchmark) without a model.
    offline_latency_s: float = Field(default=0.0, ge=0)
    model: str = "claude-sonnet-4-6"
    #: anthropic: an API gateway (empty: the SDK's default); openai: the server, e.g. http://node:8000/v1.
    base_url: str = ""
    #: A file (mode 0600) holding the API key; otherwise the backend's environment variable.
    api_key_file: str = ""
    #: Price table (USD per million tokens) by model; a model without a price is a config error.
    prices: dict[str, ModelPrice] = Field(default_factory=_default_prices)
    #: Output tokens per model reply.
    max_tokens: int = Field(default=4096, ge=256)
    #: Model replies in one decision (a tool-use conversation) before the decision fails.
    max_turns: int = Field(default=12, ge=1)
    #: Tool calls that do not validate (or are refused) in one decision before it fails.
    max_invalid: int = Field(default=3, ge=1)
    #: Retries of one request after 429 / 5xx / 529 overloaded / timeouts (retry-after is honoured).
    max_retries: int = Field(default=4, ge=0)
    retry_base_s: float = Field(default=2.0, gt=0)
    retry_max_s: float = Field(default=60.0, gt=0)
    #: The longest wait a server's retry-after may impose on one attempt (longer requests are cut to it).
    retry_after_max_s: float = Field(default=60.0, ge=0)
    #: Characters of one model reply kept in the conversation: its text, and each tool call's
    #: arguments (longer arguments are refused as a tool error); cuts carry a marker.
    reply_chars: int = Field(default=20000, ge=1000)
    #: Characters of one tool result sent back to the model.
    tool_result_chars: int = Field(default=20000, ge=1000)
    #: Characters kept of each text a decision stores (rationale, reasons, hypothesis, notes, ...) and
    #: of a proposal's title; cuts carry a marker.
    text_chars: int = Field(default=4000, ge=200)
    title_chars: int = Field(default=200, ge=20)
    timeout_s: float = Field(default=120.0, gt=0)
    #: Prompt budget, in estimated tokens, of the state an agent sees (champion, trials, forum, ...);
    #: it does not grow with the length of the log.
    context_tokens: int = Field(default=8000, ge=1000)
    #: Prompt budget of the champion program's editable files.
    program_tokens: int = Field(default=8000, ge=500)
    #: Experimenters' local smoke test of an edited program: overrides that make it tiny, a time limit,
    #: and whether to run it at all (off: only a syntax check of the Python files).
    smoke_run: bool = True
    smoke_overrides: dict[str, Any] = Field(default_factory=dict)
    smoke_timeout_s: float = Field(default=60.0, gt=0)
    #: An open model served on the cluster for the agents (llm.backend openai); see ServeSection.
    serve: ServeSection = Field(default_factory=ServeSection)

    @model_validator(mode="after")
    def _model_has_a_price(self) -> "LLMSection":
        if self.backend not in ("offline", "random") and price_of(self.prices, self.model) is None:
            raise ValueError(
                f"no price for model '{self.model}' in llm.prices (known: {', '.join(sorted(self.prices))}); "
                f"add llm.prices.{self.model}.input=... and .output=... (USD per million tokens; 0 for a "
                "model you serve yourself)")
        return self


class StateSection(_Section):
    #: auto: WAL on local disks, rollback journal on network/FUSE filesystems.
    journal_mode: Literal["auto", "wal", "delete"] = "auto"
    busy_timeout_s: float = Field(default=30.0, gt=0)


class CampaignConfig(_Section):
    campaign: CampaignSection = Field(default_factory=CampaignSection)
    task: TaskSection = Field(default_factory=TaskSection)
    coordination: CoordinationSection = Field(default_factory=CoordinationSection)
    promotion: PromotionSection = Field(default_factory=PromotionSection)
    budget: BudgetSection = Field(default_factory=BudgetSection)
    executor: ExecutorSection = Field(default_factory=ExecutorSection)
    llm: LLMSection = Field(default_factory=LLMSection)
    state: StateSection = Field(default_factory=StateSection)

    def campaign_folder(self, now: Optional[datetime] = None) -> Path:
        if self.campaign.folder:
            return Path(self.campaign.folder)
        stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
        return Path(self.campaign.root) / f"{self.campaign.name}-{stamp}"


# ---- key checking ---------------------------------------------------------------------------


def _submodel(annotation: Any) -> Optional[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is Union:
        for arg in get_args(annotation):
            found = _submodel(arg)
            if found is not None:
                return found
    return None


def check_keys(data: Any, model: type[BaseModel], source: str, prefix: str = "") -> None:
    """Raise `ConfigError` for the first key of `data` that `model` does not know."""
    if not isinstance(data, dict):
        return
    fields = model.model_fields
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            valid = ", ".join(sorted(fields))
            where = f"in section '{prefix[:-1]}'" if prefix else "at the top level"
            raise ConfigError(f"{source}: unknown key '{dotted}' {where}; valid keys: {valid}")
        sub = _submodel(fields[key].annotation)
        if sub is not None:
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"{source}: key '{dotted}' must be a section (a mapping), got {value!r}")
            check_keys(value, sub, source, prefix=f"{dotted}.")


def _format_validation(exc: ValidationError, source: str) -> str:
    """The first bad value in one line: where it came from, its key, why, and what was given (a whole
    section's settings are not repeated when a rule across them fails)."""
    errors = exc.errors()
    first = errors[0]
    key = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    value = first.get("input")
    given = "" if isinstance(value, (dict, list)) else f" (got {_clip(repr(value))})"
    more = f" (and {len(errors) - 1} more bad value(s))" if len(errors) > 1 else ""
    return f"{source}: bad value for '{key}': {message}{given}{more}"


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def load_config(path: Optional[Union[str, Path, Sequence[Union[str, Path]]]],
                overrides: Optional[list[str]] = None) -> CampaignConfig:
    """Defaults, then each YAML file in order (a campaign, then e.g. a cluster file), then
    `key=value` overrides; validated, nothing created."""
    layers: list[tuple[str, Any]] = []
    source = "defaults"
    paths = [] if path is None else [path] if isinstance(path, (str, Path)) else list(path)
    for one in paths:
        one = Path(one)
        source = str(one)
        if not one.is_file():
            raise ConfigError(f"{one}: no such config file")
        try:
            loaded = OmegaConf.load(one)
        except Exception as exc:  # yaml errors come in several classes
            raise ConfigError(f"{one}: not valid YAML: {yaml_problem(exc)}") from exc
        try:
            file_data = OmegaConf.to_container(loaded, resolve=True) if loaded is not None else {}
        except Exception as exc:  # an interpolation (${...}) that names nothing, or loops
            raise ConfigError(f"{one}: {yaml_problem(exc)}") from exc
        if file_data is None:
            file_data = {}
        if not isinstance(file_data, dict):
            raise ConfigError(f"{one}: the top level must be a mapping of sections")
        check_keys(file_data, CampaignConfig, str(one))
        layers.append((str(one), file_data))
    if overrides:
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"command line: override '{item}' is not of the form key=value")
        try:
            cli = OmegaConf.to_container(OmegaConf.from_dotlist(list(overrides)), resolve=True)
        except Exception as exc:
            raise ConfigError(_override_problem(overrides, exc)) from exc
        check_keys(cli, CampaignConfig, "command line")
        layers.append(("command line", cli))
    merged = OmegaConf.create(CampaignConfig().model_dump())
    for _, data in layers:
        merged = OmegaConf.merge(merged, OmegaConf.create(data))
    for key, value in _replaced_mappings(overrides or []):
        OmegaConf.update(merged, key, value, merge=False)
    try:
        container = OmegaConf.to_container(merged, resolve=True)
    except Exception as exc:  # an interpolation that names a key no layer set
        raise ConfigError(f"{source}: {yaml_problem(exc)}") from exc
    try:
        return CampaignConfig.model_validate(container)
    except ValidationError as exc:
        # Name where the bad value came from: the last layer that set the key.
        where = _source_of(exc, layers) or source
        raise ConfigError(_format_validation(exc, where)) from None


def _override_problem(overrides: Sequence[str], exc: Exception) -> str:
    """The overrides did not parse: one line naming the first that does not parse alone."""
    for item in overrides:
        try:
            OmegaConf.to_container(OmegaConf.from_dotlist([item]), resolve=True)
        except Exception as alone:  # noqa: BLE001 - omegaconf's and yaml's errors come in several classes
            return f"command line: cannot parse override '{item}': {yaml_problem(alone)}"
    return f"command line: cannot parse overrides {list(overrides)}: {yaml_problem(exc)}"


def _replaced_mappings(overrides: Sequence[str]) -> list[tuple[str, Any]]:
    """The command-line overrides that set a free-form mapping (`executor.slurm.additional={}`,
    `task.overrides={lr: 0.1}`) to a mapping: those replace the mapping the files set, where a
    merge could only add keys to it."""
    out = []
    for item in overrides:
        key, _, text = item.partition("=")
        key = key.strip()
        if not text.strip().startswith("{") or not _is_mapping_setting(key.split(".")):
            continue
        value = OmegaConf.to_container(OmegaConf.from_dotlist([item]), resolve=True)
        for part in key.split("."):
            value = value[part] if isinstance(value, dict) else None
        if isinstance(value, dict):
            out.append((key, value))
    return out


def _is_mapping_setting(path: list[str]) -> bool:
    """Whether `path` names a free-form mapping of the schema (a dict field, not a section)."""
    model: Optional[type[BaseModel]] = CampaignConfig
    for i, part in enumerate(path):
        if model is None or part not in model.model_fields:
            return False
        annotation = model.model_fields[part].annotation
        if i == len(path) - 1:
            return get_origin(annotation) is dict
        model = _submodel(annotation)
    return False


def _source_of(exc: ValidationError, layers: list[tuple[str, Any]]) -> Optional[str]:
    loc = exc.errors()[0]["loc"]
    for name, data in reversed(layers):
        node: Any = data
        found = True
        for part in loc:
            if isinstance(node, dict) and part in node:
                node = node[part]
            else:
                found = False
                break
        if found:
            return name
    return None
