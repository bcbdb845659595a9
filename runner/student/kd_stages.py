"""Stages and hooks of logit distillation (`trainer.torch.kd`; experiment wikisql_logit_kd).

kd_teacher_check  reads questions, the teacher                      (checks its tables; no output)
kd_teacher_init   reads train.jsonl                                  writes kd_teacher_base/
kd_teacher_train  reads train.jsonl, valid.jsonl, kd_teacher_base/   writes kd_teacher_model/, kd_teacher_train_log
student_init      (ModelInit with tokenizer_from=kd_teacher_base/: the student gets the teacher's tokenizer)
teacher_logits    reads train.jsonl, the teacher                     writes teacher_logits/ (offline mode only)
train             the ordinary Train stage; `kd_reads` / `prepare_train` add the teacher and the store.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import polars as pl

from runner.core.artifacts import remove_path
from runner.core.stage import ConfigError, Stage
from runner.train.chat_data import encode_rows, read_chat_jsonl
from runner.train.kd_loss import KDConfig
from runner.train.result import LOG_SCHEMA, TrainPaths, log_train_metrics


def kd_of(trainer: Any) -> KDConfig | None:
    """The trainer's enabled KD settings (torch only; the mlx trainer keeps a raw block to refuse it)."""
    kd = getattr(trainer, "kd", None)
    return kd if isinstance(kd, KDConfig) else None


def is_artifact(teacher: str) -> bool:
    """`kd_teacher_model/`, `student_model/`: an artifact name (one folder name ending in /).
    Anything else (`/abs/path`, `./teacher`, `models/teacher`) is a folder on disk."""
    return teacher.endswith("/") and "/" not in teacher[:-1] and not teacher.startswith(".")


def kd_reads(trainer: Any) -> tuple[str, ...]:
    kd = kd_of(trainer)
    if kd is None:
        return ()
    return ((kd.teacher,) if kd.teacher and is_artifact(kd.teacher) else ()) + \
        (("teacher_logits/",) if kd.mode == "offline" else ())


def locate_input(store, name: str, own_writes: tuple[str, ...] = ()) -> Path | None:
    """An input folder artifact. One the stage also writes (student_model/ of a reused run) is
    looked up in the pipeline.reuse_from runs only, never in this run's own output."""
    dirs = store.fallback_dirs if name in own_writes else [store.root, *store.fallback_dirs]
    name = name.rstrip("/")
    return next((d / name for d in dirs if (d / name).exists()), None)


def resolve_teacher(kd, store, own_writes: tuple[str, ...] = ()) -> Path | None:
    """The teacher's folder: a path on disk, or an artifact (see locate_input)."""
    if not is_artifact(kd.teacher):
        return Path(os.path.expanduser(kd.teacher))
    return locate_input(store, kd.teacher, own_writes)


def check_teacher_tables(teacher: Path, store, required: bool = True, log=None) -> bool:
    """A teacher from another run must not have trained on this run's held-out tables: its logits
    would carry their answers. Checked from that run's questions.parquet (a plain HF folder has none:
    then ConfigError, unless `required` is False, i.e. trainer.kd.teacher_tables_check=false).
    Returns whether the check ran."""
    theirs = teacher.parent / "questions.parquet"
    ours = store.root / "questions.parquet"
    if theirs.resolve() == ours.resolve():
        return True
    if not theirs.exists() or not ours.exists():
        if not required:
            if log is not None:
                log.warning("kd.teacher %s: its training tables are NOT checked against this run's eval tables "
                            "(trainer.kd.teacher_tables_check=false)", teacher)
            return False  # fail closed: an unchecked teacher may know the answers
        missing = theirs if not theirs.exists() else ours
        raise ConfigError(f"kd.teacher {teacher}: cannot check that it never trained on this run's held-out tables: "
                          f"{missing} is missing (a plain HF folder, or `load` skipped through reuse_from). Fix: "
                          "use a teacher trained by a run of this project with the same dataset settings, or set "
                          "trainer.kd.teacher_tables_check=false to accept the risk")
    seen = set(pl.read_parquet(theirs, columns=["table_id", "split"]).filter(pl.col("split") != "eval")["table_id"])
    held_out = set(pl.read_parquet(ours, columns=["table_id", "split"]).filter(pl.col("split") == "eval")["table_id"])
    if leak := sorted(seen & held_out):
        raise ConfigError(f"kd.teacher {teacher} was trained on {len(leak)} tables of this run's held-out eval "
                          f"split (e.g. {leak[:3]}): its logits would leak their answers. Fix: reuse a run made "
                          "with the same dataset settings (dataset.*, seed), or train the teacher in this run")
    return True


def prepare_train(trainer: Any, store, own_writes: tuple[str, ...]) -> None:
    """Before fit: point the trainer at the teacher folder and the offline store."""
    kd = kd_of(trainer)
    if kd is None:
        return
    trainer.kd_teacher_dir = resolve_teacher(kd, store, own_writes)
    if trainer.kd_teacher_dir is None:
        raise ConfigError(f"{trainer.config_key}.kd.teacher={kd.teacher}: artifact not found in this run "
                          "or pipeline.reuse_from")
    check_teacher_tables(trainer.kd_teacher_dir, store, kd.teacher_tables_check)
    trainer.kd_logits_dir = store.locate("teacher_logits/") if kd.mode == "offline" else None


def validate_kd(trainer: Any, store, own_writes: tuple[str, ...] = ()) -> None:
    """Seconds, before any work: the trainer's own checks, and the tokenizers when both exist now."""
    kd = kd_of(trainer)
    if kd is None:
        return
    teacher = resolve_teacher(kd, store, own_writes)
    base = store.locate("student_base/")
    if teacher is not None and base is not None and (teacher / "config.json").exists():
        from runner.train.teacher_logits import tokenizer_difference

        diff = tokenizer_difference(teacher, base)
        if diff:
            raise ConfigError(f"{trainer.config_key}.kd: teacher ({teacher}) and student ({base}) tokenizers "
                              f"differ: {diff}. Logit KD needs the same tokenizer")


def build_with_tokenizer(student: Any, tokenizer_dir: Path, out_dir: Path, seed: int) -> dict[str, Any]:
    """A scratch student (student.sizes[student.size]) that reuses an existing tokenizer folder,
    so its ids mean what the teacher's ids mean."""
    from transformers import AutoTokenizer

    return student.build_with(AutoTokenizer.from_pretrained(tokenizer_dir), out_dir, seed)


class ModelInit(Stage):
    """A scratch model as a HF folder: its own BPE tokenizer, or `tokenizer_from` an artifact's."""

    def __init__(self, student: Any, output: str = "kd_teacher_base/", tokenizer_from: str | None = None,
                 metric_prefix: str = "kd_teacher"):
        self.student, self.output, self.tokenizer_from = student, output, tokenizer_from
        self.metric_prefix = metric_prefix
        self.reads = ("train.jsonl",) + ((tokenizer_from,) if tokenizer_from else ())
        self.writes = (output,)

    def validate(self, ctx) -> None:
        self.student.validate(self.name)
        if not getattr(self.student, "from_scratch", False):
            raise ConfigError(f"{self.name}: needs a scratch student config (runner.lm.scratch.ScratchStudent)")

    def run(self, ctx) -> None:
        rows = read_chat_jsonl(ctx.store.locate("train.jsonl"))
        out = ctx.store.path(self.output)
        tmp = out.with_name(out.name + ".tmp")
        remove_path(tmp)
        seed = ctx.stage_seed(self.name)
        if self.tokenizer_from:
            source = locate_input(ctx.store, self.tokenizer_from, self.writes)
            if source is None:
                raise FileNotFoundError(f"{self.name}.tokenizer_from={self.tokenizer_from}: not found in this run "
                                        "or pipeline.reuse_from")
            info = build_with_tokenizer(self.student, source, tmp, seed)
        else:
            info = self.student.build(rows, tmp, seed)
        remove_path(out)
        os.replace(tmp, out)
        ctx.timer.add_items(len(rows))
        ctx.metrics.log(f"{self.metric_prefix}.source", self.student.description)
        for key in ("params", "vocab_size"):
            ctx.metrics.log(f"{self.metric_prefix}.{key}", info[key])
        ctx.log.info("%s: %s (%s) -> %s%s", self.name, self.student.description, info, out,
                     f", tokenizer of {self.tokenizer_from}" if self.tokenizer_from else "")


class _Prefixed:
    """Metrics seen through a prefix: the teacher's train.* become kd_teacher.train.*."""

    def __init__(self, metrics, prefix: str):
        self.metrics, self.prefix = metrics, prefix

    def update(self, ns: str, values: dict) -> None:
        self.metrics.update(f"{self.prefix}.{ns}", values)

    def log(self, key: str, value: Any) -> None:
        self.metrics.log(f"{self.prefix}.{key}", value)


class TeacherTrain(Stage):
    """Train the local teacher (plain SFT; its own trainer config) on the run's train.jsonl."""

    def __init__(self, trainer: Any, base: str = "kd_teacher_base/", output: str = "kd_teacher_model/",
                 log_name: str = "kd_teacher_train_log", metric_prefix: str = "kd_teacher"):
        self.trainer, self.base, self.output, self.log_name = trainer, base, output, log_name
        self.metric_prefix = metric_prefix
        self.reads = ("train.jsonl", "valid.jsonl", base)
        self.writes = (output, log_name)

    def validate(self, ctx) -> None:
        if kd_of(self.trainer) is not None:
            raise ConfigError(f"{self.name}.trainer.kd: the teacher itself trains without a teacher")
        self.trainer.validate(self.name)

    def run(self, ctx) -> None:
        ck = ctx.store.path(f"{self.name}_checkpoints/")
        paths = TrainPaths(model=ctx.store.path(self.output), adapter=ctx.store.path(f"{self.name}_adapter/"),
                           checkpoints=ck, resume_dirs=[ck, *[d / ck.name for d in ctx.store.fallback_dirs]])
        remove_path(paths.model)
        result = self.trainer.fit(read_chat_jsonl(ctx.store.locate("train.jsonl")),
                                  read_chat_jsonl(ctx.store.locate("valid.jsonl")),
                                  ctx.store.locate(self.base), paths, ctx.stage_seed(self.name))
        ctx.store.write(self.log_name, pl.DataFrame(result.log, schema=LOG_SCHEMA))
        log_train_metrics(_Prefixed(ctx.metrics, self.metric_prefix), result, self.trainer)
        ctx.log.info("%s: %d steps, final loss %s, best valid loss %s", self.name, result.steps,
                     result.final_loss, result.best_valid_loss)


class TeacherTablesCheck(Stage):
    """Right after `load`, before any teacher request: the kd teacher of another run must not have
    trained on this run's eval tables (check_teacher_tables; the train stage checks again for
    experiments without this stage)."""

    def __init__(self, trainer: Any):
        self.trainer = trainer
        kd = kd_of(trainer)
        self.reads = ("questions",) + ((kd.teacher,) if kd and kd.teacher and is_artifact(kd.teacher) else ())
        self.writes = ()

    def run(self, ctx) -> None:
        kd = kd_of(self.trainer)
        teacher = resolve_teacher(kd, ctx.store) if kd else None  # this run has no model yet
        if teacher is not None:
            if check_teacher_tables(teacher, ctx.store, kd.teacher_tables_check, ctx.log):
                ctx.log.info("%s: %s trained on none of this run's eval tables", self.name, teacher)


class TeacherLogitsStage(Stage):
    """Offline KD: the teacher's top-k log-probs over train.jsonl, once per content (cache_dir)."""

    def __init__(self, trainer: Any, batch_size: int = 16):
        self.trainer, self.batch_size = trainer, batch_size
        kd = kd_of(trainer)
        self.active = kd is not None and kd.mode == "offline"
        teacher = (kd.teacher,) if self.active and kd.teacher and is_artifact(kd.teacher) else ()
        self.reads = ("train.jsonl", *teacher)
        self.writes = ("teacher_logits/",) if self.active else ()

    def validate(self, ctx) -> None:
        if self.active:
            kd_of(self.trainer).validate(getattr(self.trainer, "config_key", "trainer"))

    def run(self, ctx) -> None:
        import torch

        from runner.train.teacher_logits import cached_store, tokenizer_difference

        if not self.active:
            ctx.log.info("teacher_logits: nothing to do (trainer kd is off or mode=online)")
            return
        kd = kd_of(self.trainer)
        teacher = resolve_teacher(kd, ctx.store)
        base = ctx.store.locate("student_base/")
        if base is not None and (diff := tokenizer_difference(teacher, base)):
            raise ConfigError(f"{self.trainer.config_key}.kd: teacher and student tokenizers differ: {diff}")
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(teacher)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        examples, _ = encode_rows(tok, read_chat_jsonl(ctx.store.locate("train.jsonl")), self.trainer.max_seq_length)
        if self.trainer.num_threads:
            torch.set_num_threads(self.trainer.num_threads)
        device = "cuda" if self.trainer.device != "cpu" and torch.cuda.is_available() else "cpu"
        meta, hit = cached_store(examples, teacher, kd, ctx.cache_dir, ctx.store.path("teacher_logits/"),
                                 device=device, pad_id=pad_id, batch_size=self.batch_size, log=ctx.log)
        ctx.timer.add_items(len(examples))
        ctx.metrics.update("teacher_logits", {
            "cache_hit": hit, "rows": meta["rows"], "positions": meta["positions"], "bytes": meta["bytes"],
            "bytes_per_token": meta["bytes_per_token"], "top_k": meta["top_k"], "store_dtype": meta["store_dtype"],
            "teacher_forward_s": meta["teacher_forward_s"], "cache_key": meta["cache_key"]})
