"""Container health probe for the gRPC services: asks grpc.health.v1 at HOST:PORT.

    python grpc_healthcheck.py HOST:PORT [SERVICE]

Exit status 0 when the server answers SERVING, 1 otherwise (NOT_SERVING while
the model is still loading, not reachable, timed out), 2 on bad usage.
SERVICE defaults to "" (the whole server), which is what the services set to
NOT_SERVING until their model is loaded. Docker runs it as the HEALTHCHECK of
the asr and vision-chat containers; grpcio and grpcio-health-checking are
dependencies of both services, so it needs nothing installed beyond them.
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TIMEOUT_S = 5.0


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2) or ":" not in argv[0]:
        print("usage: grpc_healthcheck.py HOST:PORT [SERVICE]", file=sys.stderr)
        return 2
    target = argv[0]
    service = argv[1] if len(argv) == 2 else ""
    request = health_pb2.HealthCheckRequest(service=service)
    try:
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(request, timeout=TIMEOUT_S)
    except grpc.RpcError as exc:
        print(f"{target}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{target}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
