"""`python -m api.channels.fakes --port 9100 --secret s`: run the fake providers standalone, for manual testing."""

import argparse

import uvicorn

from api.channels.fakes.server import create_fake_app


def main() -> None:
    """Parse the command line and serve the fakes on 127.0.0.1 until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m api.channels.fakes",
        description="Fake WeChat, SMS and voice providers that speak the real protocols.",
    )
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--secret", required=True, help="callback signing secret")
    parser.add_argument("--callback-url", default=None)
    args = parser.parse_args()
    app = create_fake_app(callback_secret=args.secret, callback_url=args.callback_url)
    uvicorn.run(app, host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
