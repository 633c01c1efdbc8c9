"""Profiles: what `cabench run --profile NAME` does, one module each, registered in :data:`PROFILES`."""

from cabench.profiles.base import PROFILES, Hooks, Option, Outcome, Profile, Request, register_profile

__all__ = ["PROFILES", "Hooks", "Option", "Outcome", "Profile", "Request", "register_profile"]
