"""Named refusals of the device-side slot store and installer (the trust refusals are in ota.errors)."""

from __future__ import annotations

from ota.errors import OtaError


class SlotStoreError(OtaError):
    """Base of the slot store's own refusals."""

    code = "slot_store"


class NotProvisionedError(SlotStoreError):
    """The store directory holds no state record and no verifiable slot: provision it first."""

    code = "not_provisioned"


class NoBootableSlotError(SlotStoreError):
    """Neither slot holds an image whose bytes match its record (flash corruption)."""

    code = "no_bootable_slot"


class InstallStateError(SlotStoreError):
    """The operation does not fit the persisted state (e.g. install while a trial is running)."""

    code = "install_state"


class RefusedReleaseError(SlotStoreError):
    """This release was already tried on this device and reverted; it is not retried."""

    code = "refused_release"
