"""The models this server knows: built-in ones from the catalog file, and the versions accounts
deployed, as the control plane publishes them."""

from inferd.catalog.catalog import DEPLOY_ID_PREFIX, Catalog, DeployedVersion, ModelNotFound
from inferd.catalog.routes import Route, RouteTarget
from inferd.catalog.spec import ModelSpec, Price

__all__ = [
    "DEPLOY_ID_PREFIX",
    "Catalog",
    "DeployedVersion",
    "ModelNotFound",
    "ModelSpec",
    "Price",
    "Route",
    "RouteTarget",
]
