"""Board support: the VCU1525 platform (and, later, the card top level)."""

from .vcu1525 import VCU1525Platform

__all__ = ["VCU1525Platform"]
