"""The durable queue and its workers: webhook deliveries, batch lines and retention sweeps are
rows in the database (inferd.store.jobs_tables), claimed under a lease by any gateway process;
a process killed at any moment loses nothing, since its leases expire and the work resumes."""

from inferd.jobs.queue import ClaimedJob, JobQueue
from inferd.jobs.runner import GiveUp, JobRunner, RetryLater

__all__ = ["ClaimedJob", "GiveUp", "JobQueue", "JobRunner", "RetryLater"]
