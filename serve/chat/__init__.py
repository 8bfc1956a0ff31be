"""The API-neutral chat core: request schemas, chat templates and prompts, the thinking/channel parser, tool calls
and the grammars that hold answers to a schema. Imports the engine; no wire API."""
