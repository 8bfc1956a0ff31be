"""What serve, route and stack share: one definition each, imported by all three.

errors.py        the OpenAI error body
anthropic_errors.py  Anthropic's error body and which paths take it
validation.py    a pydantic ValidationError as one line
names.py         strategy and model-type names, GGUF architecture -> model type, the backend name pattern
registration.py  the registration body (POST /backends/register)
jsonbody.py      a request body -> a JSON object, refusing what would crash a handler (depth, surrogates, NaN)
keys.py          keys from an owner-only file or the environment, checked in constant time
settings.py      a settings model -> flags, HEARTH_<PROGRAM>_* variables and a config file, layered; keys refused on
                 a command line; one-line errors naming where a bad value came from
logs.py          the one log format, the ASGI servers' start lines as ours, access lines (AccessLog, note)
version.py       the version every --version prints
stopping.py      SIGTERM as Ctrl-C until a server's own handlers take over
"""
