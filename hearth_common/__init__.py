"""What serve, route and stack share: one definition each, imported by all three.

errors.py        the OpenAI error body
validation.py    a pydantic ValidationError as one line
names.py         strategy and model-type names, GGUF architecture -> model type, the backend name pattern
registration.py  the registration body (POST /backends/register)
jsonbody.py      a request body -> a JSON object, refusing what would crash a handler (depth, surrogates, NaN)
keys.py          keys from an owner-only file or the environment, checked in constant time
"""
