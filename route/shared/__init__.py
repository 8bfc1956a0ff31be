"""Router replicas sharing state in Redis (`--shared-state redis://HOST:PORT/DB`).

Each replica keeps serving from its own memory; Redis is where the replicas tell each other what changed, read and
written by one background loop per replica (sync.py) and, for the few writes that cannot wait for it, by tasks
started from the event that caused them. Nothing on a request's path waits on Redis except the first request of a
model that is not loaded, which tries the model's load lock (a few milliseconds; a cold load takes seconds).

store.py: the connection, its up/down state and the keys; sync.py: what each kind of state does with them.
"""
