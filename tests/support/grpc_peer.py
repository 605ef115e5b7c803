"""A real gRPC server and client (grpcio) for the gRPC tests, with no generated code: messages
are raw bytes.

    grpc_peer.py serve NAME [CERT KEY]
                                   serves /echo.Echo/Say (unary) and /echo.Echo/Count (server
                                   streaming) on a free loopback port (over TLS with CERT and KEY,
                                   PEM files), prints the port, and runs until stdin closes
    grpc_peer.py call TARGET AUTHORITY METHOD [KEY=VALUE...]
                                   calls METHOD over h2c at TARGET with :authority AUTHORITY and the
                                   metadata given; prints one JSON line: the status code's name, its
                                   details, the responses and the trailing metadata

Say answers one JSON message with the server's name and the metadata it received; Count answers
three, numbered. Both send trailing metadata `echo-trailer: yes`.
"""

import json
import sys
import threading
from concurrent import futures

import grpc


def serve(name, tls):
    def seen(context):
        return {k: v for k, v in context.invocation_metadata() if not k.endswith("-bin")}

    def say(request, context):
        context.set_trailing_metadata((("echo-trailer", "yes"),))
        return json.dumps({"upstream": name, "request": request.decode(), "metadata": seen(context)}).encode()

    def count(request, context):
        context.set_trailing_metadata((("echo-trailer", "yes"),))
        for i in range(3):
            yield json.dumps({"upstream": name, "n": i, "metadata": seen(context)}).encode()

    handler = grpc.method_handlers_generic_handler(
        "echo.Echo",
        {
            "Say": grpc.unary_unary_rpc_method_handler(say),
            "Count": grpc.unary_stream_rpc_method_handler(count),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    if tls:
        cert, key = (open(path, "rb").read() for path in tls)
        credentials = grpc.ssl_server_credentials(((key, cert),))
        port = server.add_secure_port("127.0.0.1:0", credentials)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    # The harness ends the server by closing stdin (or by its PID).
    threading.Thread(target=sys.stdin.read, daemon=True).start()
    sys.stdin.read()
    server.stop(0)


def call(target, authority, method, pairs):
    metadata = [tuple(p.split("=", 1)) for p in pairs]
    options = [("grpc.default_authority", authority)]
    with grpc.insecure_channel(target, options=options) as channel:
        out = {"code": "OK", "details": "", "responses": [], "trailing": {}, "initial": {}}
        try:
            if method.endswith("/Count"):
                call = channel.unary_stream(method)(b"count", metadata=metadata, timeout=10)
                for message in call:
                    out["responses"].append(json.loads(message))
            else:
                response, call = channel.unary_unary(method).with_call(b"hello", metadata=metadata, timeout=10)
                out["responses"].append(json.loads(response))
            out["trailing"] = dict(call.trailing_metadata() or ())
            out["initial"] = dict(call.initial_metadata() or ())
        except grpc.RpcError as e:
            out["code"] = e.code().name
            out["details"] = e.details() or ""
            out["trailing"] = dict(e.trailing_metadata() or ())
            out["initial"] = dict(e.initial_metadata() or ())
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3:5])
    else:
        call(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
