"""The kmock glue: the ONLY module that touches kmock 0.8's private internals.

kmock is pinned exactly (``kmock==0.8``) because of what this module relies on:

- ``RawHandler.__call__`` is replaced: kmock's URL parser raises on ``/api/v1/namespaces``
  (gap 3), so requests are parsed here and handed to kmock as a ready ``kmock.Request``
  (a public class; its ``raw_request=`` argument is private).
- ``self._requests`` (private) gets every request, so kmock's DSL views (``kmock['create …']``)
  count and filter them as usual.
- ``RawHandler._handle`` (private) is still the dispatcher of user reactions; it raises
  ``NotImplementedError`` when no reaction matches, and only then does the emulated API answer.
  So a fault injected through the DSL (``kmock['create v1/configmaps'][:1] << 500``) wins and
  the store is not touched: the failed call changes nothing, as a failed call to a real server.
- ``kmock._internal.rendering.StreamingError`` (private) wraps errors in a user's streamed reply.

``tests/operator/test_kmock_stock_gaps.py`` records the stock behaviour this works around.
"""

from __future__ import annotations

import asyncio
import json
import traceback

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import rendering  # private: StreamingError

from kubeemu.api import KubeApi, error_response, json_response
from kubeemu.errors import ApiError
from kubeemu.paths import ApiPath, parse_api_path
from kubeemu.requestlog import RequestLog

CLIENT_CLOSED = 499  # logged status of a call whose client left before it ended (nginx's code)
_ACTIONS = {
    "list": kmock.action.LIST,
    "watch": kmock.action.WATCH,
    "get": kmock.action.FETCH,
    "create": kmock.action.CREATE,
    "update": kmock.action.UPDATE,
    "patch": kmock.action.UPDATE,
    "delete": kmock.action.DELETE,
}


@attrs.define(kw_only=True)
class EmulatorHandler(kmock.RawHandler):
    """A kmock handler whose fallback, when no user reaction matches, is the emulated API."""

    api: KubeApi
    log: RequestLog
    failures: list[str] = attrs.field(factory=list)  # unexpected exceptions, with tracebacks

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        body = await raw_request.read()
        api_path = parse_api_path(raw_request.path)
        query = {key: raw_request.query.getone(key) for key in raw_request.query}
        call = self.log.start(
            method=raw_request.method,
            path=raw_request.path,
            api_path=api_path,
            query=query,
            user_agent=raw_request.headers.get("User-Agent", ""),
        )
        request = self._kmock_request(raw_request, body, api_path, query, call.verb)
        self._requests.append(request)
        try:
            response = await self._respond(request, raw_request, body)
        except asyncio.CancelledError:  # the client went away mid-call (e.g. closed a watch)
            self.log.finish(call, CLIENT_CLOSED)
            raise
        self.log.finish(call, response.status)
        return response

    async def _respond(
        self, request: kmock.Request, raw_request: aiohttp.web.BaseRequest, body: bytes
    ) -> aiohttp.web.StreamResponse:
        try:
            return await self._handle(request)
        except NotImplementedError:  # no user reaction matched: the emulated API answers
            pass
        except rendering.StreamingError as e:  # a user's streamed reply failed midway
            response: aiohttp.web.StreamResponse = e.args[0]
            await response.write_eof()
            return response
        except kmock.KubernetesError as e:  # e.g. kmock[...] << kmock.KubernetesError(409, …)
            return json_response(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "code": e.status,
                    "reason": e.reason or "",
                    "message": e.message or "",
                },
                status=e.status,
            )
        except Exception as e:  # a user reaction raised: report it as a server error
            return error_response(ApiError(f"injected failure: {e!r}"))
        try:
            return await self.api.serve(raw_request, body)
        except Exception:  # an emulator bug: answer 500, and keep it for the test to see
            self.failures.append(traceback.format_exc())
            return error_response(ApiError("emulator failure; see KubeEmulator.failures"))

    def _kmock_request(
        self,
        raw_request: aiohttp.web.BaseRequest,
        body: bytes,
        api_path: ApiPath | None,
        query: dict[str, str],
        verb: str,
    ) -> kmock.Request:
        text = body.decode("utf-8", errors="replace")
        try:
            if not body:
                data = None
            elif raw_request.content_type.endswith("yaml"):
                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except (ValueError, yaml.YAMLError):
            data = None  # kmock's criteria then match the raw body or text only
        resource = (
            kmock.resource(group=api_path.group, version=api_path.version, plural=api_path.plural)
            if api_path is not None
            else None
        )
        return kmock.Request(
            id=len(self._requests),
            raw_request=raw_request,
            url=raw_request.url,
            method=raw_request.method,
            params=query,
            headers=dict(raw_request.headers),
            cookies=dict(raw_request.cookies),
            body=body,
            text=text,
            data=data,
            action=_ACTIONS.get(verb),
            resource=resource,
            namespace=api_path.namespace if api_path else None,
            name=api_path.name if api_path else None,
            subresource=api_path.subresource if api_path else None,
        )
