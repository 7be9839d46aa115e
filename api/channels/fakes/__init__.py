"""Fake WeChat, SMS and voice providers that speak the real protocols, for tests and `serve --demo`.

One app serves all three under prefixes, so the client base URLs are `{base}/wechat`, `{base}/sms` and
`{base}/voice`. Everything sent is recorded (`GET /_fake/outbox`), behaviour is scripted over HTTP
(`/_fake/...`, see docs/providers.md), and delivery receipts, call progress and inbound SMS replies are
posted to the callback URL signed like a real provider would. State lives in memory, in the server's
event loop; `POST /_fake/reset` returns to the initial state.

    with FakeProviderServer(callback_secret="s", callback_url="http://127.0.0.1:8000/...") as fake:
        sms_base_url = fake.sms_base_url

Modules: `wechat`, `sms`, `voice` (one provider each), `contract` (what the SMS and voice fakes share),
`scripts` and `control` (the `/_fake` scripting API), `state` (memory and signed callbacks), `server` (the app
and the loopback server), `__main__` (the command line). Within `api/`, only the CLI's `serve --demo` imports
them; tests and benchmarks use them freely.
"""

from api.channels.fakes.server import FakeProviderServer, LoopbackServer, create_fake_app
from api.channels.fakes.state import (
    DEFAULT_SMS_API_KEY,
    DEFAULT_VOICE_API_KEY,
    DEFAULT_WECHAT_APPID,
    DEFAULT_WECHAT_SECRET,
)

__all__ = [
    "DEFAULT_SMS_API_KEY",
    "DEFAULT_VOICE_API_KEY",
    "DEFAULT_WECHAT_APPID",
    "DEFAULT_WECHAT_SECRET",
    "FakeProviderServer",
    "LoopbackServer",
    "create_fake_app",
]
