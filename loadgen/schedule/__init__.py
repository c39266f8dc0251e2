"""What to send and when: length distributions, arrival pacers and the per-stage plan of requests."""

from loadgen.schedule.plan import Planned, plan_stage, preview

__all__ = ["Planned", "plan_stage", "preview"]
