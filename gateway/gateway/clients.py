"""gRPC channels to the model services, opened once per process and shared."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import grpc
from chatbot_protos.asr.v1 import asr_pb2_grpc
from chatbot_protos.chat.v1 import chat_pb2_grpc
from fastapi import Depends, Request
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .config import Settings


def _channel(address: str, settings: Settings, interceptors: Sequence = ()) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address, options=[
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
    ], interceptors=list(interceptors) or None)


@dataclass
class ModelClients:
    asr_channel: grpc.aio.Channel
    chat_channel: grpc.aio.Channel

    @classmethod
    def connect(cls, settings: Settings, interceptors: Sequence = ()) -> "ModelClients":
        """`interceptors` (grpc.aio client interceptors) see every call: metrics use them."""
        return cls(_channel(settings.asr_addr, settings, interceptors),
                   _channel(settings.chat_addr, settings, interceptors))

    @property
    def asr(self) -> asr_pb2_grpc.TranscriptionStub:
        return asr_pb2_grpc.TranscriptionStub(self.asr_channel)

    @property
    def chat(self) -> chat_pb2_grpc.ChatServiceStub:
        return chat_pb2_grpc.ChatServiceStub(self.chat_channel)

    async def health(self) -> dict[str, str]:
        """Each service's grpc.health.v1 status name, or why it could not be asked."""
        states = {}
        for name, channel in (("asr", self.asr_channel), ("chat", self.chat_channel)):
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
                states[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.aio.AioRpcError as error:
                states[name] = f"UNREACHABLE ({error.code().name})"
        return states

    async def close(self) -> None:
        await self.asr_channel.close()
        await self.chat_channel.close()


# Dependencies are `async def`: FastAPI runs a plain `def` one in a worker thread,
# a thread hop per request for a simple attribute read.
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_clients(request: Request) -> ModelClients:
    return request.app.state.clients


SettingsDep = Annotated[Settings, Depends(get_settings)]
ClientsDep = Annotated[ModelClients, Depends(get_clients)]


def request_metadata(request: Request) -> tuple[tuple[str, str], ...]:
    """gRPC metadata that lets the services' logs be matched to the HTTP request."""
    return (("x-request-id", request.state.request_id),)
