"""The checkpoint keeper: which cuts of a run are complete, their manifests, which to keep, where to resume.

A cut needs the learner's and the replay service's parts, the model server's when one runs, and
the part of every local actor the replay part saw live (runtime/checkpoints.py has the format).
The keeper gives every newly complete cut its manifest and keeps the two newest complete cuts (and
any newer one still being written): a newest cut damaged after it was verified (a disk fault, a
partial copy of the run directory) leaves the one before it to resume from. A resumed run takes the
newest cut whose parts all verify and was written by this configuration, and says so when that is
not the newest on disk.
"""

from __future__ import annotations

import os
import shutil

from mbgen.runtime import checkpoints
from mbgen.runtime.logs import get_logger
from mbgen.runtime.roles import LEARNER, MODELSERVER, REPLAY, actor_name

KEPT_CUTS = 2  # complete cuts kept: the newest, and the one to fall back to when the newest does not verify


class CheckpointKeeper:
    def __init__(self, run_dir: str, digest: str, model_server: bool):
        self.root = os.path.join(run_dir, "checkpoints")
        self.run_dir = run_dir
        self.digest = digest  # the configuration's: a cut of another configuration is not this run's
        self.model_server = model_server
        self.latest = -1  # updates of the newest complete cut
        self.latest_bytes = 0  # and its size on disk (0 before the first of this session)

    def required_parts(self, cut: str) -> list[str]:
        """The parts a cut needs: learner, replay, model server, and every actor the replay part saw live."""
        names = [LEARNER, REPLAY] + ([MODELSERVER] if self.model_server else [])
        return names + [actor_name(s) for s in checkpoints.part_meta(cut, REPLAY)["live_actors"]]

    def verify(self, cut: str) -> dict[str, dict]:
        """Every part of a cut, verified; raises CheckpointError naming what is wrong."""
        for name in (LEARNER, REPLAY):
            if not checkpoints.has_part(cut, name):
                raise checkpoints.CheckpointError(f"{cut}: part {name} is missing")
        if checkpoints.part_meta(cut, LEARNER).get("config") != self.digest:
            raise checkpoints.CheckpointError(f"{cut} was written by a run with another configuration")
        names = self.required_parts(cut)
        missing = [n for n in names if not checkpoints.has_part(cut, n)]
        if missing:
            raise checkpoints.CheckpointError(f"{cut}: part {missing[0]} is missing")
        return {name: checkpoints.verify_part(cut, name) for name in names}

    def assemble(self) -> None:
        """Give every newly complete cut its manifest, then delete all but the two newest complete cuts."""
        for cut in checkpoints.list_cuts(self.root):
            u = checkpoints.cut_updates(cut)
            if u <= self.latest or not checkpoints.has_part(cut, REPLAY):
                continue
            try:
                parts = self.verify(cut)
            except checkpoints.CheckpointError:
                continue  # parts still being written
            checkpoints.write_manifest(cut, parts, {"config": self.digest})
            self.latest = u
            self.latest_bytes = sum(p["bytes"] for p in parts.values())
            get_logger().info("checkpoint", updates=u, bytes=sum(p["bytes"] for p in parts.values()), parts=len(parts))
            self.prune()

    def prune(self) -> None:
        """Delete complete cuts older than the KEPT_CUTS newest, and unfinished cuts older than the newest
        complete one (whoever was writing them has moved past)."""
        cuts = checkpoints.list_cuts(self.root)
        kept = [c for c in cuts if checkpoints.has_manifest(c)][-KEPT_CUTS:]
        for cut in cuts:
            if cut not in kept and checkpoints.cut_updates(cut) < self.latest:
                shutil.rmtree(cut, ignore_errors=True)

    def finish(self) -> None:
        """A completed run: the two newest complete cuts stay, a cut left unfinished by the stop goes."""
        cuts = checkpoints.list_cuts(self.root)
        for cut in cuts:
            if not checkpoints.has_manifest(cut) and checkpoints.cut_updates(cut) > self.latest:
                shutil.rmtree(cut, ignore_errors=True)

    def assemble_quietly(self) -> None:
        """`assemble`, a failure of which is logged instead of raised (the stop path)."""
        try:
            self.assemble()
        except (OSError, ValueError) as error:
            get_logger().warning("checkpoint_assembly_failed", error=str(error))

    def newest(self, required: bool = True) -> str | None:
        """The newest cut whose parts all verify (raises, naming why, when `required` and there is none)."""
        problems = []
        for cut in reversed(checkpoints.list_cuts(self.root)):
            try:
                self.verify(cut)
            except checkpoints.CheckpointError as error:
                problems.append(str(error))
                continue
            if problems:  # a newer cut did not verify: the person resuming should know which one is used
                get_logger().warning("resume_from_older_cut", cut=cut, skipped="; ".join(problems))
            return cut
        if required:
            detail = "; ".join(problems) if problems else f"no checkpoint in {self.root}"
            raise checkpoints.CheckpointError(f"cannot resume {self.run_dir}: {detail}")
        return None

    def forget_after(self, cut: str) -> None:
        """Cuts newer than the one resumed from belong to a history that did not happen: remove them."""
        u = checkpoints.cut_updates(cut)
        for other in checkpoints.list_cuts(self.root):
            if checkpoints.cut_updates(other) > u:
                shutil.rmtree(other, ignore_errors=True)
        self.latest = u
