"""Priority-aware, non-stall scheduling of agent sessions (see scheduler.py)."""

from searchagent.scheduler.queues import (QUEUE_KINDS, FCFSQueue, PriorityQueue,
                                          PriorityWeights, RequestQueue, make_queue)
from searchagent.scheduler.retrieval import (NonStallRetriever, ScheduledSearcher,
                                             schedule_strategy)
from searchagent.scheduler.scheduler import Scheduler, SchedulerOptions
from searchagent.scheduler.session import Session, SessionCancelled

__all__ = ["QUEUE_KINDS", "FCFSQueue", "PriorityQueue", "PriorityWeights", "RequestQueue",
           "make_queue", "NonStallRetriever", "ScheduledSearcher", "schedule_strategy", "Scheduler",
           "SchedulerOptions", "Session", "SessionCancelled"]
