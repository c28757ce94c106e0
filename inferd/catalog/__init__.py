"""What is served: model specs loaded from a catalog file, and name resolution."""

from inferd.catalog.catalog import Catalog, ModelNotFound
from inferd.catalog.spec import ModelSpec, Price

__all__ = ["Catalog", "ModelNotFound", "ModelSpec", "Price"]
