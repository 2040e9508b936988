"""The consumer: SQS deliveries into raw.login_events, at least once, one unit per job.

- receiving.py: receiver threads long-poll the queue into the inbox, within the message budget
- batching.py: the inbox, and the batch builder: micro-batches that fill while messages
  come and go when the queue drains
- loading.py: each batch to an idle loader; a LoadResult says what landed and what was refused
- acknowledging.py: deletes what landed after its commit; gives back what is held at the end
- visibility.py: the messages held (InFlight) and the keeper that extends their visibility
- pending.py: the calls running on a thread pool (loads, deletes) until reaped
- stats.py: a run's counts (its settings are ingest.settings.RunSettings)
- run_loop.py: Consumer, which only wires the units together

The loader itself is ingest/consumer/raw_loader.py; the queue, ingest/consumer/sqs.py.
"""

from ingest.consumer.loading import Loader, LoadResult
from ingest.consumer.run_loop import Consumer, Ingest
from ingest.consumer.stats import Stats

__all__ = ["Consumer", "Ingest", "LoadResult", "Loader", "Stats"]
