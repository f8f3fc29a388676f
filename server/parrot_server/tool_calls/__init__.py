"""Tool calling on `/v1/chat/completions`: how tools and tool turns reach the prompt, what the
output is constrained to, and how the output becomes OpenAI tool calls."""
