/*
 * jsonschema.h: OpenAI's response_format and tool_choice compiled into a grammar (grammar.h)
 * for constrained decoding. Supported JSON Schema: type (one or a list), properties, required,
 * additionalProperties, items, minItems, maxItems, minLength, maxLength, enum, const, anyOf,
 * allOf with one schema, $ref into the same document ($defs, definitions; recursion allowed);
 * annotations (title, description, default, examples, format, $schema, $id, $comment, ...) are
 * ignored as JSON Schema says. Any other keyword is an error that names it and where it is.
 * Tool calls come out as one LFM2 call block, <|tool_call_start|>[f(a=1, b="x")]<|tool_call_end|>,
 * with Python literals (True, False, None) and arguments shaped by the function's parameters.
 * Callers: the server (per request), tests, the constrained-decoding benchmark.
 */
#ifndef EXSA_JSONSCHEMA_H
#define EXSA_JSONSCHEMA_H

#include <stddef.h>
#include <stdint.h>

struct grammar;

/* response_format as the request's JSON text: {"type": "text"} (*out = NULL: no constraint),
 * {"type": "json_object"} (any JSON object) or {"type": "json_schema", "json_schema":
 * {"name", "schema", "strict"}}. Returns 0, EXSA_EINVAL (err says what and where: an unknown
 * type, a bad or unsupported schema) or EXSA_ENOMEM. */
int js_response_format(const char *json, struct grammar **out, char *err, size_t errlen);
/* A JSON schema's text, the whole reply's shape. Errors as js_response_format. */
int js_schema(const char *schema_json, struct grammar **out, char *err, size_t errlen);
/* tools: the request's tools array (OpenAI {"type": "function", "function": {...}} or bare
 * function objects); tool_choice: "none" or "auto" (*out = NULL), "required" (one of the tools)
 * or {"type": "function", "function": {"name": ...}}; call_start/call_end: the ids of
 * <|tool_call_start|> and <|tool_call_end|>; up to max_calls (>= 1) calls in the block.
 * Errors as js_response_format. */
int js_tool_choice(const char *tools, const char *tool_choice, int32_t call_start, int32_t call_end,
                   int max_calls, struct grammar **out, char *err, size_t errlen);
void js_free(struct grammar *g);

#endif
