"""Deployments and their replicas: starting, health, restart on crash, routing."""

from inferd.runtime.call import Call, ModelUnavailable
from inferd.runtime.runtime import Runtime

__all__ = ["Call", "ModelUnavailable", "Runtime"]
