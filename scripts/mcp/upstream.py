"""A small MCP server for the gateway's tests, on the official Python SDK
(`mcp.server.mcpserver.MCPServer`), over stdio: a tool that echoes, one that
kills its own process mid-call (the upstream crashing), a prompt and a
resource (passed through by the gateway)."""

import os

from mcp.server.mcpserver import MCPServer

server = MCPServer("warden-test-upstream")


@server.tool()
def echo(text: str) -> str:
    """Returns the text it was given."""
    return f"echo: {text}"


@server.tool()
def environment() -> str:
    """The names of this process's environment variables (what it was given)."""
    return " ".join(sorted(os.environ))


@server.tool()
def crash(text: str) -> str:
    """Kills this server mid-call, as a crashing upstream would."""
    os._exit(3)


@server.prompt()
def review(subject: str) -> str:
    """Asks for a review of the subject."""
    return f"Please review {subject} carefully."


@server.resource("notes://today")
def today() -> str:
    """Today's notes."""
    return "Nothing planned."


if __name__ == "__main__":
    server.run("stdio")
