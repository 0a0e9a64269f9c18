"""What an analysis computes (:class:`AnalysisConfig`), where its training dynamics come from
(:data:`DYNAMICS_REGISTRY`), and which settings go together (:func:`check_config`).

The command line and the app's Analysis settings both call :func:`check_config` with what the
user gave, before any path is read, so both refuse the same combinations with the same
:class:`ConfigError`; the command line words the message with its flags (a :class:`Wording`),
the app and the engine in plain words (:data:`PLAIN_WORDING`). Building an
:class:`AnalysisConfig` runs the same check, so a configuration made in a notebook obeys the
same rules.

The rules:

- an embedding option the source does not take (a path, vector column or architecture; see
  :attr:`analytics.embeddings.EmbeddingSource.options`);
- two sources of training dynamics at once (a dynamics folder and per-epoch checkpoints);
- a chosen dynamics source while another source's input is given;
- a dynamics source without what it needs (:attr:`DynamicsSource.needs`);
- settings of one dynamics source (fine-tuning) while another is chosen;
- a dynamics source other than the probe without scores (no dynamics are computed);
- an architecture without any checkpoint (no embedding or dynamics source that takes one).

What each dynamics source computes is in its module of :mod:`analytics.dynamics_sources`; its
entry here holds those functions, so the pipeline runs any source the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Callable, Mapping

from analytics.clusters import ClusterConfig
from analytics.data_issues import IssueOptions
from analytics.datasets import Dataset
from analytics.dynamics import ProbeConfig
from analytics.dynamics_sources import checkpoints as checkpoints_source
from analytics.dynamics_sources import finetune as finetune_source
from analytics.dynamics_sources import folder as folder_source
from analytics.dynamics_sources import probe as probe_source
from analytics.embeddings import EMBEDDING_REGISTRY, SPEC_OPTIONS, EmbeddingSpec, default_spec
from analytics.finetune_config import FinetuneConfig
from analytics.projection import PROJECTIONS, UMAP_INITS
from analytics.slices import SliceConfig

__all__ = [
    "AnalysisConfig",
    "ConfigError",
    "DynamicsSource",
    "DYNAMICS_REGISTRY",
    "DYNAMICS_SOURCES",
    "Wording",
    "PLAIN_WORDING",
    "check_config",
]


class ConfigError(ValueError):
    """Settings that do not go together, or a source without what it needs; the message names
    the settings at fault in the caller's words and is safe to show a browser user."""


@dataclass(frozen=True, kw_only=True)
class DynamicsSource:
    """One source of training dynamics: what the user gives and sees, and what it computes.

    Attributes
    ----------
    name : str
        Its key: ``AnalysisConfig.dynamics_from`` and the command line's ``--dynamics-from``.
    label : str
        What the app's Analysis settings show.
    noun : str
        How messages name it: "training dynamics from the {noun}".
    input : str, optional
        The :class:`AnalysisConfig` field holding what it reads (``"dynamics_dir"``,
        ``"checkpoints"``); giving it implies this source when none is chosen.
    minimum : int
        How many of ``input`` it needs (a path: 1; checkpoints: 2, one per epoch).
    needs : str
        The refusal when it has fewer: what it needs, in plain words (``{n}``: how many were given).
    settings : str, optional
        The :class:`AnalysisConfig` field of settings only this source uses (``"finetune"``);
        settings other than the defaults are refused with any other source.
    options : tuple of str
        Other :class:`AnalysisConfig` fields it reads (``"architecture"``, ``"trust"``); an
        architecture is refused unless the source or the embedding source takes one.
    check, train, params, manifest : callable
        What it computes: checks before any stage, the dynamics, the cache key, its keys of the
        manifest (the contract is in :mod:`analytics.dynamics_sources`).
    scheme : callable, optional
        ``scheme(config, gold)``: how it fits its models, when it has a choice (the probe).
    heldout : callable, optional
        ``heldout(run, report)``: its own out-of-fold probabilities (fine-tuning); without it, the
        probe's.
    model : str
        What the manifest's ``clusters.errors`` calls the model of its held-out predictions
        ("{model} (out-of-fold)"), for a source that gives them (the probe, fine-tuning).
    last_epoch_errors : str
        When set, the clusters and slices judge the predictions of its last epoch instead of the
        held-out ones, and the manifest's ``clusters.errors`` says this (the user's checkpoints:
        their own model's errors).
    keyed_on_embeddings : bool
        Whether the dynamics stage's cache key holds the embeddings' key. Fine-tuning's dynamics
        never see the embeddings; the other sources' entries have always been keyed on them.
    trains_ahead : bool
        Whether its dynamics may be trained in a second process while the analysis compiles
        (:mod:`analytics.ahead`): it reads nothing of the dataset but its labels, and nothing but
        the embeddings (the probe).
    """

    name: str
    label: str
    noun: str
    input: str | None = None
    minimum: int = 0
    needs: str = ""
    settings: str | None = None
    options: tuple[str, ...] = ()
    check: Callable
    train: Callable
    params: Callable[..., dict]
    manifest: Callable[..., dict]
    scheme: Callable[..., str] | None = None
    heldout: Callable | None = None
    model: str = ""
    last_epoch_errors: str = ""
    keyed_on_embeddings: bool = True
    trains_ahead: bool = False

    def takes(self, option: str) -> bool:
        """Whether it reads the :class:`AnalysisConfig` field ``option`` (its ``options``)."""
        return option in self.options


# The first entry is the default source (nothing given, nothing chosen).
DYNAMICS_REGISTRY: Mapping[str, DynamicsSource] = MappingProxyType({source.name: source for source in (
    DynamicsSource(name="probe", label="Probe on the embeddings (fast)", noun="probe", model="probe",
                   check=probe_source.check, train=probe_source.train, params=probe_source.params,
                   manifest=probe_source.manifest, scheme=probe_source.scheme, trains_ahead=True),
    DynamicsSource(name="finetune", label="Fine-tune the model (slower; the paper's map)", noun="fine-tuning",
                   settings="finetune", model="fine-tuned model", keyed_on_embeddings=False,
                   check=finetune_source.check, train=finetune_source.train, params=finetune_source.params,
                   manifest=finetune_source.manifest, heldout=finetune_source.heldout),
    DynamicsSource(name="checkpoints", label="Per-epoch checkpoints", noun="checkpoints", input="checkpoints",
                   minimum=2, needs="Training dynamics from checkpoints need at least two checkpoints, one per "
                                    "epoch in order; {n} given.",
                   options=("architecture", "trust"), last_epoch_errors="model (last checkpoint)",
                   check=checkpoints_source.check, train=checkpoints_source.train,
                   params=checkpoints_source.params, manifest=checkpoints_source.manifest),
    DynamicsSource(name="folder", label="A dynamics folder (dynamics_epoch_*.jsonl)", noun="folder",
                   input="dynamics_dir", minimum=1,
                   needs="Training dynamics from a folder need its path: the folder of dynamics_epoch_*.jsonl "
                         "files, or the model output folder that holds training_dynamics/.",
                   check=folder_source.check, train=folder_source.train, params=folder_source.params,
                   manifest=folder_source.manifest),
)})
DYNAMICS_SOURCES = tuple(DYNAMICS_REGISTRY)


@dataclass(frozen=True, kw_only=True)
class Wording:
    """How :func:`check_config` words a refusal: what each setting is called, and one sentence
    per rule, formatted with the named values given below.

    Attributes
    ----------
    names : mapping of str to str
        How each setting is called: the :class:`AnalysisConfig` inputs (``dynamics_dir``,
        ``checkpoints``), the :data:`~analytics.embeddings.SPEC_OPTIONS` and the fine-tuning
        settings. A setting not listed is called by its field name.
    both_inputs : str
        Two dynamics sources given at once: ``{first}``, ``{second}`` (their inputs' names).
    conflict : str
        A chosen source while another's input is given: ``{chosen}``, ``{chosen_noun}``,
        ``{given}`` (the input's name), ``{implied}``, ``{implied_noun}``.
    needs : mapping of str to str
        Per dynamics source, its "needs" sentence (``{n}``); the registry's plain one otherwise.
    settings : str
        Another source's settings: ``{options}``, ``{owner}``, ``{owner_noun}``, ``{chosen}``,
        ``{chosen_noun}``.
    no_scores : str
        Dynamics without scores: ``{chosen}``, ``{chosen_noun}``.
    embedding_option : str
        An embedding option the source does not take: ``{option}`` (its name), ``{field}``
        (the plain name), ``{source}``, ``{owners}`` (the sources that take it).
    architecture : str
        An architecture without a checkpoint: ``{option}``.
    """

    names: Mapping[str, str]
    both_inputs: str
    conflict: str
    needs: Mapping[str, str]
    settings: str
    no_scores: str
    embedding_option: str
    architecture: str

    def name(self, setting: str) -> str:
        return self.names.get(setting, setting.replace("_", " "))


PLAIN_WORDING = Wording(
    names={"dynamics_dir": "a dynamics folder", "checkpoints": "per-epoch checkpoints", "column": "vector column"},
    both_inputs="Give either {first} or {second}, not both: each is a source of training dynamics.",
    conflict="Training dynamics from the {chosen_noun} conflict with {given}: choose one source of training dynamics.",
    needs={},
    settings="The {owner_noun} settings {options} apply only to training dynamics from the {owner_noun}; these "
             "come from the {chosen_noun}.",
    no_scores="Without scores no training dynamics are computed, so dynamics from '{chosen}' have nothing to do: "
              "compute the scores, or leave the source out.",
    embedding_option="The '{source}' embedding source takes no {field}; the sources that take one: {owners}.",
    architecture="An architecture names the model class of a state-dict checkpoint: it applies only to a "
                 "checkpoint embedding source or to training dynamics from checkpoints.",
)


def check_config(
    *,
    embedding: EmbeddingSpec | None = None,
    dynamics_from: str | None = None,
    dynamics_dir: str | None = None,
    checkpoints: tuple[str, ...] = (),
    architecture: str | None = None,
    finetune: FinetuneConfig | None = None,
    scores: bool = True,
    wording: Wording = PLAIN_WORDING,
) -> str:
    """Check that the settings go together (the rules are listed in the module docstring).

    Parameters are the :class:`AnalysisConfig` fields of the same names, as the user gave them
    (paths as typed: nothing is read). ``finetune=None`` means the defaults.

    Returns
    -------
    str
        The source of the training dynamics: ``dynamics_from``, or the one its input implies.

    Raises
    ------
    ConfigError
        Worded by ``wording``.
    """
    if embedding is not None:
        _check_embedding_options(embedding, wording)
    inputs = {"dynamics_dir": dynamics_dir, "checkpoints": tuple(checkpoints)}
    chosen = _dynamics_source(dynamics_from, inputs, wording)
    settings = {"finetune": finetune}
    for owner in DYNAMICS_REGISTRY.values():
        changed = _changed_settings(settings.get(owner.settings)) if owner.settings else []
        if changed and owner.name != chosen:
            raise ConfigError(wording.settings.format(
                options=", ".join(wording.name(option) for option in changed), owner=owner.name,
                owner_noun=owner.noun, chosen=chosen, chosen_noun=DYNAMICS_REGISTRY[chosen].noun))
    if not scores and chosen != DYNAMICS_SOURCES[0]:
        raise ConfigError(wording.no_scores.format(chosen=chosen, chosen_noun=DYNAMICS_REGISTRY[chosen].noun))
    checkpoint_embedding = embedding is not None and EMBEDDING_REGISTRY[embedding.source].takes("architecture")
    if architecture and not DYNAMICS_REGISTRY[chosen].takes("architecture") and not checkpoint_embedding:
        raise ConfigError(wording.architecture.format(option=wording.name("architecture")))
    return chosen


def _check_embedding_options(spec: EmbeddingSpec, wording: Wording) -> None:
    source = EMBEDDING_REGISTRY[spec.source]
    for option in SPEC_OPTIONS:
        if getattr(spec, option) and not source.takes(option):
            owners = [other.name for other in EMBEDDING_REGISTRY.values() if other.takes(option)]
            raise ConfigError(wording.embedding_option.format(
                option=wording.name(option), field=PLAIN_WORDING.name(option), source=source.name,
                owners=", ".join(owners)))


def _dynamics_source(chosen: str | None, inputs: dict, wording: Wording) -> str:
    """The chosen (or implied) source of training dynamics, checked against the inputs given."""
    if chosen is not None and chosen not in DYNAMICS_REGISTRY:
        raise ConfigError(f"dynamics_from must be one of {DYNAMICS_SOURCES}, not {chosen!r}")
    # later sources first: "a dynamics folder or per-epoch checkpoints"
    given = [source for source in reversed(DYNAMICS_REGISTRY.values()) if source.input and inputs[source.input]]
    if len(given) > 1:
        raise ConfigError(wording.both_inputs.format(first=wording.name(given[0].input),
                                                     second=wording.name(given[1].input)))
    if chosen is None:
        chosen = given[0].name if given else DYNAMICS_SOURCES[0]
    elif given and given[0].name != chosen:
        raise ConfigError(wording.conflict.format(
            chosen=chosen, chosen_noun=DYNAMICS_REGISTRY[chosen].noun, given=wording.name(given[0].input),
            implied=given[0].name, implied_noun=given[0].noun))
    source = DYNAMICS_REGISTRY[chosen]
    if source.input is not None:
        value = inputs[source.input]
        n = len(value) if isinstance(value, tuple) else int(bool(value))
        if n < source.minimum:
            raise ConfigError(wording.needs.get(chosen, source.needs).format(n=n))
    return chosen


def _changed_settings(settings) -> list[str]:
    """The fields of a settings dataclass that differ from its defaults (none for None)."""
    if settings is None:
        return []
    defaults = type(settings)()
    return [item.name for item in fields(settings) if getattr(settings, item.name) != getattr(defaults, item.name)]


@dataclass(frozen=True)
class AnalysisConfig:
    """What to compute. ``embedding=None`` picks the source from the data (see
    :func:`analytics.embeddings.default_spec`).

    Training dynamics come from ``dynamics_from``: ``"probe"`` (a probe on the embeddings,
    ``probe``), ``"finetune"`` (the model fine-tuned on the examples, ``finetune``; see
    :mod:`analytics.finetune`), ``"checkpoints"`` (``checkpoints``, one per epoch in order, with
    ``architecture`` for state dicts) or ``"folder"`` (``dynamics_dir``: the folder of
    ``dynamics_epoch_*.jsonl`` files or the model output folder that holds
    ``training_dynamics/``). ``None`` resolves from the other fields: ``dynamics_dir`` gives
    "folder", ``checkpoints`` give "checkpoints", otherwise "probe" (:attr:`dynamics_source`).
    The sources are the entries of :data:`DYNAMICS_REGISTRY`; settings that do not go together
    raise :class:`ConfigError` (:func:`check_config`).

    ``issues`` sets the data-issue checks (:class:`analytics.data_issues.IssueOptions`, all on by
    default); ``None`` skips them (no ``issues.json``, and a different run folder).
    """

    embedding: EmbeddingSpec | None = None
    projection: str = "umap"
    k: int = 15
    seed: int | None = None
    exact_knn_max: int = 50_000
    umap_fit_max: int = 2_000_000
    umap_init: str = "auto"
    device: str | None = None
    scores: bool = True
    dynamics_dir: str | None = None
    checkpoints: tuple[str, ...] = ()
    architecture: str | None = None
    trust: bool = False
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    clusters: ClusterConfig | None = field(default_factory=ClusterConfig)
    slices: SliceConfig = field(default_factory=SliceConfig)
    dynamics_from: str | None = None
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    issues: IssueOptions | None = field(default_factory=IssueOptions)

    def __post_init__(self):
        if self.projection not in PROJECTIONS:
            raise ConfigError(f"projection must be one of {PROJECTIONS}, not {self.projection!r}")
        if self.k < 1:
            raise ConfigError("k must be at least 1")
        if self.umap_init not in UMAP_INITS:
            raise ConfigError(f"umap_init must be one of {UMAP_INITS}, not {self.umap_init!r}")
        check_config(embedding=self.embedding, dynamics_from=self.dynamics_from, dynamics_dir=self.dynamics_dir,
                     checkpoints=self.checkpoints, architecture=self.architecture, finetune=self.finetune,
                     scores=self.scores)

    @property
    def dynamics_source(self) -> str:
        """Where the training dynamics come from: one of :data:`DYNAMICS_SOURCES`."""
        return _dynamics_source(self.dynamics_from, {"dynamics_dir": self.dynamics_dir,
                                                     "checkpoints": self.checkpoints}, PLAIN_WORDING)

    def resolved(self, dataset: Dataset) -> "AnalysisConfig":
        return self if self.embedding else replace(self, embedding=default_spec(dataset))
