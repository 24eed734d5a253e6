"""Tool calls and structured output: the request types, the parser of each format, their grammars."""
