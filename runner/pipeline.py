"""Pipeline: instantiate the enabled stages in order, validate the whole chain, run them."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from runner.core.context import RunContext
from runner.core.stage import ConfigError, Stage


@dataclass
class PlannedStage:
    name: str
    stage: Stage


def build(pipeline_cfg: DictConfig) -> list[PlannedStage]:
    """Instantiate every enabled stage. `pipeline.skip` and `<stage>.enabled=false` switch stages off."""
    skip = set(pipeline_cfg.get("skip") or [])
    stages_cfg = pipeline_cfg.get("stages") or {}
    unknown = skip - set(stages_cfg.keys())
    if unknown:
        raise ConfigError(f"pipeline.skip names unknown stages {sorted(unknown)}; "
                          f"the stages are {list(stages_cfg.keys())}")
    planned = []
    for name, scfg in _ordered(pipeline_cfg.get("order"), stages_cfg):
        if scfg is None or name in skip:
            continue
        scfg = OmegaConf.to_container(scfg, resolve=True)
        if not scfg.pop("enabled", True):
            continue
        if "_target_" not in scfg:
            raise ConfigError(f"pipeline.stages.{name} has no _target_ (the stage class to instantiate)")
        try:
            obj = instantiate(scfg, _convert_="all")
        except Exception as e:  # Hydra wraps constructor errors; surface the cause
            cause = e.__cause__ or e
            if isinstance(cause, ConfigError):
                raise _in_stage(cause, name) from None
            raise _in_stage(ConfigError(f"pipeline.stages.{name}: cannot instantiate {scfg['_target_']}: {cause}"),
                            name) from e
        if not isinstance(obj, Stage):
            raise ConfigError(f"pipeline.stages.{name}: {scfg['_target_']} is not a runner.core.stage.Stage")
        obj.name = name
        planned.append(PlannedStage(name, obj))
    if not planned:
        raise ConfigError("the pipeline has no enabled stage")
    return planned


def _ordered(order, stages_cfg) -> list[tuple[str, Any]]:
    """Stages in `pipeline.order` when set (an experiment that inserts stages before existing ones:
    a config merge appends new keys at the end); it must name every stage, so a stage added later
    is never silently run in an unintended place."""
    if not order:
        return list(stages_cfg.items())
    names = list(stages_cfg.keys())
    order = list(order)
    unknown = [n for n in order if n not in names]
    missing = [n for n in names if n not in order and stages_cfg[n] is not None]
    if unknown or missing or len(set(order)) != len(order):
        raise ConfigError(f"pipeline.order must list every stage once: unknown {unknown}, missing {missing}; "
                          f"the stages are {names}")
    return [(n, stages_cfg[n]) for n in order]


def validate(planned: list[PlannedStage], ctx: RunContext, notes: list[str] | None = None) -> None:
    """Every stage's own checks, then the data chain: each input is written by an earlier
    enabled stage or already exists on disk (this run or `pipeline.reuse_from`)."""
    produced: dict[str, str] = {}
    for p in planned:
        try:
            p.stage.validate(ctx)
        except ConfigError as e:
            raise _in_stage(e, p.name, p.stage) from None
        for art in p.stage.reads:
            if art not in produced and not ctx.store.exists(art):
                raise _in_stage(ConfigError(
                    f"stage {p.name!r} reads artifact {art!r}, which no earlier enabled stage writes "
                    f"and which is not on disk (looked in {ctx.store.root}"
                    + "".join(f", {d}" for d in ctx.store.fallback_dirs)
                    + "). Fix: enable the stage that writes it, or point pipeline.reuse_from at a run "
                    "folder that has it."), p.name)
        for art in p.stage.writes:
            produced[art] = p.name
    # the experiment's own notes (pipeline.notes), then each stage's (e.g. a simulated teacher)
    notes = list(dict.fromkeys([*(notes or []), *(n for p in planned for n in p.stage.notices())]))
    for note in notes:
        ctx.log.warning("NOTE: %s", note)
    if notes:
        ctx.metrics.log("run.notices", notes)


def _in_stage(e: ConfigError, name: str, stage: Stage | None = None) -> ConfigError:
    """Tag the error with the stage being validated (metrics.json `failed_stage`) and name the key
    as the user types it: a stage's own setting `NAME.key` is `pipeline.stages.NAME.key` on the
    command line. Group settings (`trainer.*`, `gate.*`, `consistency_distill.*`, also when a stage
    has the group's name) are not attributes of the stage and keep their names."""
    msg = str(e)
    own = re.match(rf"{re.escape(name)}\.(\w+)", msg)
    if own and stage is not None and own.group(1) in vars(stage):
        msg = f"pipeline.stages.{msg}"
    out = ConfigError(msg)
    out.stage = name  # type: ignore[attr-defined]
    return out


def run(planned: list[PlannedStage], ctx: RunContext) -> None:
    for p in planned:
        ctx.stage = p.name
        ctx.log.info("stage %s: start", p.name)
        t0 = time.perf_counter()
        with ctx.timer.stage(p.name):
            p.stage.run(ctx)
        ctx.log.info("stage %s: done in %.2f s", p.name, time.perf_counter() - t0)
        missing = [a for a in p.stage.writes if not ctx.store.path(a).exists()]
        if missing:
            raise RuntimeError(f"stage {p.name!r} declared it writes {missing} but did not write them")
    ctx.stage = None


def describe(planned: list[PlannedStage]) -> list[dict[str, Any]]:
    return [{"stage": p.name, "class": f"{type(p.stage).__module__}.{type(p.stage).__name__}",
             "reads": list(p.stage.reads), "writes": list(p.stage.writes)} for p in planned]
