"""Router replicas sharing state in Redis (`--shared-state redis://HOST:PORT/DB`).

Each replica keeps serving from its own memory; Redis is where the replicas tell each other what changed, read and
written by one background loop per replica (sync.py) and, for the few writes that cannot wait for it, by tasks
started from the event that caused them. Nothing on a request's path waits on Redis except the first request of a
model that is not loaded, which tries the model's load lock and its node's placement lock (a few milliseconds; a cold
load takes seconds).

store.py: the keys (the connection and its up/down state: hearth_common/redis_link.py); sync.py: what each kind of
state does with them; prefix.py: the prefix strategy's index. The model servers' stored responses live in the same
Redis, kept by the servers themselves (serve/api/responses_shared.py).
"""
