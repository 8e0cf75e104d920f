"""An MCP client this project did not write: the official Python SDK (PyPI `mcp`),
driving `warden gateway` over streamable HTTP. One action per run; prints one
JSON object on stdout.

    WARDEN_API_KEY=... python client.py URL list
    WARDEN_API_KEY=... python client.py URL call TOOL '{"arg": 1}'
    WARDEN_API_KEY=... python client.py URL prompts | resources
    WARDEN_API_KEY=... python client.py URL prompt NAME '{"arg": "value"}'
    WARDEN_API_KEY=... python client.py URL read URI

The key comes from the environment (never argv, which other users can read).
With URL `stdio`, the client launches the server itself (the JSON array in
MCP_STDIO_COMMAND) and talks to it over stdin/stdout, passing it this
environment (WARDEN_API_KEY included).
"""

import json
import os
import sys

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def describe(error: BaseException) -> dict:
    """An exception (possibly a group) as the innermost causes' names and text."""
    if isinstance(error, BaseExceptionGroup):
        inner = [describe(e) for e in error.exceptions]
        return {"exception": "group", "causes": inner, "message": " | ".join(i["message"] for i in inner)}
    out = {"exception": type(error).__name__, "message": str(error)}
    code = getattr(error, "code", None)
    if isinstance(code, int):
        out["code"] = code
    data = getattr(error, "data", None)
    if data is not None:
        out["data"] = data
    response = getattr(error, "response", None)
    if response is not None and hasattr(response, "status_code"):
        out["http_status"] = response.status_code
    return out


async def main() -> None:
    url, action = sys.argv[1], sys.argv[2]
    headers = {}
    key = os.environ.get("WARDEN_API_KEY")
    if key:
        headers["Authorization"] = f"Bearer {key}"
    progress: list[dict] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append({"progress": value, "message": message})

    out: dict
    try:
        async with create_mcp_http_client(headers=headers) as http:
            if url == "stdio":
                command = json.loads(os.environ["MCP_STDIO_COMMAND"])
                server = StdioServerParameters(command=command[0], args=command[1:], env=dict(os.environ))
            else:
                server = streamable_http_client(url, http_client=http)
            async with Client(server, mode="legacy") as client:
                if action == "list":
                    result = await client.list_tools()
                    out = {"tools": sorted(t.name for t in result.tools)}
                elif action == "call":
                    name, arguments = sys.argv[3], json.loads(sys.argv[4])
                    result = await client.call_tool(name, arguments, progress_callback=on_progress)
                    texts = [c.text for c in result.content if getattr(c, "text", None) is not None]
                    out = {"is_error": bool(result.is_error), "text": "\n".join(texts), "progress": progress}
                elif action == "prompts":
                    result = await client.list_prompts()
                    out = {"prompts": sorted(p.name for p in result.prompts)}
                elif action == "prompt":
                    result = await client.get_prompt(sys.argv[3], json.loads(sys.argv[4]))
                    texts = [m.content.text for m in result.messages if getattr(m.content, "text", None)]
                    out = {"text": "\n".join(texts)}
                elif action == "resources":
                    result = await client.list_resources()
                    out = {"resources": sorted(str(r.uri) for r in result.resources)}
                elif action == "read":
                    result = await client.read_resource(sys.argv[3])
                    out = {"text": "\n".join(getattr(c, "text", "") for c in result.contents)}
                else:
                    out = {"exception": "usage", "message": f"unknown action {action}"}
    except BaseException as error:  # noqa: BLE001 - reported to the test, which decides
        out = describe(error)
        out["progress"] = progress
    print(json.dumps(out), flush=True)


anyio.run(main)
