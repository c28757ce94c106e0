"""The request path, protocol-free: principal → resolve → limits → budget → submit → settle."""

from inferd.serving.admission import Admission, RequestMeta
from inferd.serving.core import Serving
from inferd.serving.errors import RequestError

__all__ = ["Admission", "RequestError", "RequestMeta", "Serving"]
