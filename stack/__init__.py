"""The whole stack in one command: a stack file -> converted models, model servers, a router, supervision."""
