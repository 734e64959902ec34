"""The checkpoint keeper: which cuts of a run are complete, their manifests, which to keep, where to resume.

A cut needs the learner's and the replay service's parts, the model server's when one runs, and
the part of every local actor the replay part saw live (runtime/checkpoints.py has the format).
The keeper gives every newly complete cut its manifest and then deletes the older cuts, so the
previous checkpoint survives until the new one is complete; a resumed run takes the newest cut
whose parts all verify and was written by this configuration.
"""

from __future__ import annotations

import os
import shutil

from mbgen.runtime import checkpoints
from mbgen.runtime.logs import get_logger
from mbgen.runtime.roles import LEARNER, MODELSERVER, REPLAY, actor_name


class CheckpointKeeper:
    def __init__(self, run_dir: str, digest: str, model_server: bool):
        self.root = os.path.join(run_dir, "checkpoints")
        self.run_dir = run_dir
        self.digest = digest  # the configuration's: a cut of another configuration is not this run's
        self.model_server = model_server
        self.latest = -1  # updates of the newest complete cut

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
        """Give every newly complete cut its manifest, then delete the older ones."""
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
            get_logger().info("checkpoint", updates=u, bytes=sum(p["bytes"] for p in parts.values()), parts=len(parts))
            for older in checkpoints.list_cuts(self.root):
                if checkpoints.cut_updates(older) < u:
                    shutil.rmtree(older, ignore_errors=True)

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
                return cut
            except checkpoints.CheckpointError as error:
                problems.append(str(error))
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
