"""Choosing, starting and following the analysis run behind the Map (and later pages)."""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from analytics.access import AccessError, check_architecture, resolve_data_path
from analytics.analysis_config import DYNAMICS_REGISTRY, check_config
from analytics.clusters import ClusterConfig
from analytics.datasets import Dataset
from analytics.embeddings import EMBEDDING_REGISTRY, EmbeddingError, EmbeddingSpec, default_spec
from analytics.finetune_config import FinetuneConfig
from analytics.pipeline import AnalysisConfig, AnalysisRun, RunError, check_sources, is_run_dir
from analytics.workspace import Workspace
from ui import cached, jobs, state
from ui.figures import map_figure
from ui.policy import policy as operator_policy

CLUSTER_METHODS = {"kmeans": "k-means", "hdbscan": "HDBSCAN"}
ACTIVE_CONFIG = "analysis_config"  # {fingerprint: AnalysisConfig}
DAMAGED_RUNS = "damaged_runs"  # {run folder: manifest stamp when found damaged} while recomputed
AUTO_SOURCE = "auto"  # the embedding source picked from the data (default_spec)
_SOURCE_LABELS = {AUTO_SOURCE: "Automatic", **{name: source.label for name, source in EMBEDDING_REGISTRY.items()}}
_TRUST_NOTE = ("Checkpoints load safely (weights only). Full unpickling, which can run code from the file, is "
               "the server operator's choice (CARTOGRAPHER_TRUST_CHECKPOINTS), as is the list of architectures "
               "(CARTOGRAPHER_ARCHITECTURES).")
_DYNAMICS_LABELS = {name: source.label for name, source in DYNAMICS_REGISTRY.items()}


def analysis_settings(dataset: Dataset) -> AnalysisConfig:
    """The expander where the user picks how the map is computed; returns the active config."""
    configs = st.session_state.setdefault(ACTIVE_CONFIG, {})
    active = configs.get(dataset.fingerprint, AnalysisConfig())
    auto = default_spec(dataset)
    with st.expander("Analysis settings", expanded=False):
        source = st.selectbox("Embedding source", list(_SOURCE_LABELS), format_func=_SOURCE_LABELS.get,
                              key="analysis_source",
                              help=f"Automatic picks '{_SOURCE_LABELS[auto.source]}' for this dataset.")
        spec_fields = _embedding_fields(EMBEDDING_REGISTRY.get(source), auto)
        left, right = st.columns(2)
        projection = left.radio("Layout", ["umap", "pca"], format_func=str.upper, horizontal=True,
                                key="analysis_projection")
        k = right.number_input("Neighbours (k)", 2, 100, value=active.k, key="analysis_k",
                               help="Size of the shared nearest-neighbour graph used by the map and "
                                    "every neighbourhood score.")
        c1, c2 = st.columns(2)
        active_clusters = active.clusters or ClusterConfig()
        cluster_method = c1.radio("Clusters", list(CLUSTER_METHODS), horizontal=True, key="analysis_cluster_method",
                                  index=list(CLUSTER_METHODS).index(active_clusters.method),
                                  format_func=CLUSTER_METHODS.get,
                                  help="k-means on the embeddings, or HDBSCAN on the map (it can leave "
                                       "points unassigned as noise).")
        cluster_k = c2.number_input("Number of clusters (0 = automatic)", 0, 200, value=active_clusters.k or 0,
                                    key="analysis_cluster_k", disabled=cluster_method != "kmeans",
                                    help="Automatic picks k by silhouette on a sample.")
        dynamics_from, dynamics_fields = _dynamics_settings(dataset, active)
        if st.button("Compute the map with these settings", key="analysis_apply"):
            try:
                spec = None if source == AUTO_SOURCE else EmbeddingSpec(source=source, **spec_fields)
                clusters = ClusterConfig(method=cluster_method,
                                         k=(int(cluster_k) or None) if cluster_method == "kmeans" else None)
                dynamics = _checked_dynamics(dynamics_from, dynamics_fields, dataset.kind, embedding=spec)
                config = AnalysisConfig(embedding=_checked_spec(spec) if spec else None, projection=projection,
                                        k=int(k), clusters=clusters, **dynamics)
                with st.spinner("Checking the training dynamics…"):
                    check_sources(dataset, config, policy=operator_policy())
                configs[dataset.fingerprint] = active = config
                st.session_state.pop(state.OPENED_RUN, None)
            except (EmbeddingError, ValueError, AccessError) as exc:  # ConfigError, SourceError, FinetuneError too
                st.error(str(exc))
    return active


def _dynamics_settings(dataset: Dataset, active: AnalysisConfig) -> tuple[str, dict]:
    """The "Training dynamics" part of the settings: the source and what it needs, as typed."""
    sources = list(DYNAMICS_REGISTRY)
    choice = st.selectbox(
        "Training dynamics", sources, index=sources.index(active.dynamics_source), format_func=_DYNAMICS_LABELS.get,
        key="analysis_dynamics_from",
        help="Where the data map's confidence and variability come from. The probe learns on frozen "
             "embeddings in seconds but often memorises every example (a one-dimensional map); "
             "fine-tuning the model records the logits of every example in each training epoch, as "
             "the paper does. Your own training run can write a dynamics folder (README, \"Bring your "
             "own training\").")
    fields: dict = {}
    if choice == "finetune":
        tuned = active.finetune
        c1, c2, c3 = st.columns(3)
        fields["epochs"] = c1.number_input("Epochs", 2, 100, value=tuned.epochs, key="analysis_ft_epochs")
        fields["batch_size"] = c2.number_input("Batch size", 1, 4096, value=tuned.batch_size,
                                               key="analysis_ft_batch_size")
        fields["seed"] = c3.number_input("Seed", 0, 2**31 - 1, value=tuned.seed, key="analysis_ft_seed")
        c1, c2 = st.columns(2)
        fields["learning_rate"] = c1.text_input(
            "Learning rate", value="" if tuned.learning_rate is None else f"{tuned.learning_rate:g}",
            key="analysis_ft_lr", placeholder="default for the data",
            help="AdamW's rate, decayed linearly to 0. Blank: 3e-5 for text, 1e-3 for tables and images.")
        fields["max_tokens"] = c2.number_input("Max tokens (text)", 8, 4096, value=tuned.max_tokens,
                                               key="analysis_ft_max_tokens", disabled=dataset.kind != "text",
                                               help="Each text is cut to this many tokens.")
        fields["model"] = st.text_input(
            "Model folder (optional)", value=tuned.model or "", key="analysis_ft_model",
            placeholder="/models/my-encoder (a Hugging Face folder)", disabled=dataset.kind == "tabular",
            help="A Hugging Face model folder (text or images) or, for images, a TorchScript file. "
                 "Blank: MiniLM for text, a small CNN on the pixels for images. Tables always train an "
                 "MLP from scratch on their standardised columns.").strip()
        st.caption("Fine-tuning on a CPU takes about 40 ms per text per epoch (a minute per epoch for "
                   "1,500 texts); tables and small images are much faster. Progress shows each step "
                   "with the time an epoch is expected to take, and a stopped run resumes from its "
                   "last finished epoch.")
    elif choice == "checkpoints":
        fields["paths"] = st.text_area("Checkpoints, one per line, in epoch order", key="analysis_dyn_checkpoints",
                                       value="\n".join(active.checkpoints),
                                       placeholder="/models/run/epoch0.pt\n/models/run/epoch1.pt\n/models/run/epoch2.pt",
                                       help="Each checkpoint's logits on every example are one epoch of the "
                                            "training dynamics.")
        fields["architecture"] = st.text_input("Architecture (state dicts only)", key="analysis_dyn_architecture",
                                               value=active.architecture or "",
                                               placeholder="mypkg.models:Net").strip() or None
        st.caption(_TRUST_NOTE)
    elif choice == "folder":
        fields["path"] = st.text_input(
            "Dynamics folder", value=active.dynamics_dir or "", key="analysis_dyn_folder",
            placeholder="/runs/my-model (it holds training_dynamics/)",
            help="The folder of dynamics_epoch_{e}.jsonl files, or the model output folder that holds "
                 "training_dynamics/ (as allenai/cartography writes it).").strip()
    return choice, fields


def _embedding_fields(source, auto: EmbeddingSpec) -> dict:
    """The widgets of what the chosen embedding source takes (its registry entry's path and
    options; none for Automatic), as typed."""
    fields: dict = {}
    if source is None:
        return fields
    if source.takes("column"):
        fields["column"] = st.text_input("Vector column", value=auto.column or "", key="analysis_column")
    if source.path is not None:
        fields["path"] = st.text_input("Path", key="analysis_path", placeholder=source.path.example)
    if source.takes("architecture"):
        fields["architecture"] = st.text_input("Architecture (state dicts only)", key="analysis_architecture",
                                               placeholder="mypkg.models:Net") or None
    if source.takes("trust"):
        st.caption(_TRUST_NOTE)
    return fields


def _checked_dynamics(source: str, fields: dict, dataset_kind: str, *, embedding: EmbeddingSpec | None) -> dict:
    """The :class:`AnalysisConfig` fields of the chosen dynamics source. The settings as typed go
    through :func:`analytics.analysis_config.check_config` first (a :class:`ConfigError` says what
    does not go together, or what is missing); then every path the user typed is resolved under
    the operator's rules (:class:`AccessError` names what was typed)."""
    rules = operator_policy()
    typed = [line.strip() for line in fields.get("paths", "").splitlines() if line.strip()]
    checked = check_config(embedding=embedding, dynamics_from=source, dynamics_dir=fields.get("path") or None,
                           checkpoints=tuple(typed), architecture=fields.get("architecture"))
    if checked == "finetune":
        rate = fields["learning_rate"].strip()
        try:
            learning_rate = float(rate) if rate else None
        except ValueError:
            raise ValueError(f"Learning rate '{rate}' is not a number (e.g. 3e-5); leave it blank for the "
                             "model's default.") from None
        model = (str(resolve_data_path(fields["model"], rules, what="model to fine-tune"))
                 if fields["model"] and dataset_kind != "tabular" else None)
        return {"dynamics_from": "finetune", "finetune": FinetuneConfig(
            epochs=int(fields["epochs"]), learning_rate=learning_rate, batch_size=int(fields["batch_size"]),
            max_tokens=int(fields["max_tokens"]), seed=int(fields["seed"]), model=model)}
    if checked == "checkpoints":
        paths = tuple(str(resolve_data_path(path, rules, what="checkpoint")) for path in typed)
        return {"dynamics_from": "checkpoints", "checkpoints": paths, "architecture": fields["architecture"],
                "trust": rules.trust_checkpoints}
    if checked == "folder":
        folder = resolve_data_path(fields["path"], rules, what="dynamics folder", allow_file=False)
        return {"dynamics_from": "folder", "dynamics_dir": str(folder)}
    # the default source (the probe) is the config's default; any other needs nothing typed here
    return {} if checked == next(iter(DYNAMICS_REGISTRY)) else {"dynamics_from": checked}


def _checked_spec(spec: EmbeddingSpec) -> EmbeddingSpec:
    """The spec with the path the user typed checked against the operator's rules before anything
    is read (what it is and whether it may be a folder come from the source's registry entry),
    the architecture checked, and the operator's trust setting where the source takes one.
    Raises :class:`AccessError` with a message safe to show."""
    rules = operator_policy()
    source = EMBEDDING_REGISTRY[spec.source]
    changes: dict = {}
    if source.path is not None:
        changes["path"] = str(resolve_data_path(spec.path, rules, what=source.path.what, allow_dir=source.path.folder))
    if spec.architecture:
        check_architecture(spec.architecture, rules, trust=rules.trust_checkpoints)
    if source.takes("trust"):
        changes["trust"] = rules.trust_checkpoints
    return replace(spec, **changes)


def page_run(title: str) -> tuple[Dataset, AnalysisRun]:
    """The preamble of every analysis page: the dataset, its title, the settings expander, and
    the finished run (or its progress, after which the page stops)."""
    dataset = state.require_dataset()
    st.title(title)
    config = analysis_settings(dataset)
    run = current_run(dataset, config)
    if run is None:
        run_progress(dataset, config)  # shows progress (and the PCA map once it exists), then stops
    return dataset, run


def current_run(dataset: Dataset, config: AnalysisConfig) -> AnalysisRun | None:
    """The finished run for ``config``, an opened run folder, or None if it must be computed."""
    opened = st.session_state.get(state.OPENED_RUN)
    if opened is not None and opened.dataset.fingerprint == dataset.fingerprint:
        return opened
    try:
        run_dir = cached.run_dir(dataset.fingerprint, config, dataset)
    except (EmbeddingError, ValueError, AccessError) as exc:  # a checkpoint or folder gone since it was checked
        st.error(str(exc))
        st.stop()
    if not is_run_dir(run_dir):
        return None
    stamp = cached.run_stamp(run_dir)
    damaged = st.session_state.setdefault(DAMAGED_RUNS, {})
    try:
        run = cached.load_run(str(run_dir), stamp)
    except RunError as exc:
        # A damaged run is recomputed once: the finished job that wrote it is dropped, so the
        # job manager starts a fresh one (reusing it would rerun the page endlessly). While that
        # job runs the manifest stays the same; a new manifest that is still damaged stops here.
        if str(run_dir) not in damaged:
            damaged[str(run_dir)] = stamp
            jobs.forget(str(run_dir))
        elif damaged[str(run_dir)] != stamp:
            st.error(f"{exc} Computing it again did not repair it: check the workspace's disk.")
            if st.button("Try again", key="analysis_damaged_retry"):
                damaged.pop(str(run_dir), None)
                st.rerun()
            st.stop()
        st.warning(f"{exc} Computing it again.")
        return None
    damaged.pop(str(run_dir), None)
    return run


def run_progress(dataset: Dataset, config: AnalysisConfig) -> None:
    """Start (or join) the run in the background and show its place in the queue or its progress,
    with a Cancel button; the page reruns when it is done."""
    key = str(cached.run_dir(dataset.fingerprint, config, dataset))
    try:
        job = jobs.start_analysis(dataset, config, Workspace.default(), key=key)
    except jobs.JobLimitError as exc:
        st.warning(str(exc))
        st.stop()

    # the PCA map, drawn once below the poll, not on every poll; not once the job has stopped
    shown = None if job.cancelled or job.error else job.partial.get("pca")

    @st.fragment(run_every=1.5)
    def follow() -> None:
        if job.cancelled or job.error:
            if shown is not None:
                st.rerun(scope="app")  # the preview goes with the job
            if job.cancelled:
                st.info(f"The analysis was stopped. {job.error}")
            else:
                st.error(f"The analysis failed: {job.error}")
            if st.button("Compute it again", key="analysis_retry"):
                jobs.forget(job.key)
                st.rerun(scope="app")
            return
        if job.done:
            st.rerun(scope="app")
        if jobs.show_progress(job, fraction=jobs.analysis_overall(job), key="analysis_cancel"):
            st.rerun(scope="app")
        if shown is None and job.partial.get("pca") is not None:
            st.rerun(scope="app")  # the PCA map has come: drawn once, outside this poll
        if shown is None and job.stage == "embeddings":
            st.caption("Computing embeddings: the map appears as soon as they are ready.")

    follow()
    if shown is not None:
        # outside the poll: each poll (every 1.5 s, in every tab that follows a job) would send and
        # redraw the whole chart again
        st.info("The analysis is still running; meanwhile this is the instant PCA layout (the map "
                "and selection open when it is done).")
        figure = map_figure(shown[:, 0], shown[:, 1], colour=dataset.table["label"],
                            colour_name="label", size=4.0 if len(shown) > 20_000 else 6.0)
        st.plotly_chart(figure.figure, key="map_preview", width="stretch")
    st.stop()
