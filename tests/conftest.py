import os

import pytest

os.environ.setdefault("TVM_NUM_THREADS", "2")


def require_emulated_arm() -> None:
    """Fail (never skip) when the emulated aarch64 device's Debian packages are missing."""
    from tvm_patterns.devices.emulated_arm import missing_packages

    missing = missing_packages()
    if missing:
        pytest.fail(f"the emulated aarch64 device needs apt-get install {' '.join(missing)} "
                    "(.ci/apt-packages.txt)")


@pytest.fixture(scope="module")
def arm_device():
    """One emulated aarch64 RPC server for the module (qemu-user; the runtime is built once and cached)."""
    from tvm_patterns.devices.emulated_arm import EmulatedDevice

    require_emulated_arm()
    with EmulatedDevice() as dev:
        yield dev


@pytest.fixture(scope="module")
def arm_device_without_dotprod():
    """The emulated aarch64 server on a Cortex-A72 (no dot product: sdot is an illegal instruction there)."""
    from tvm_patterns.devices.emulated_arm import EmulatedDevice

    require_emulated_arm()
    with EmulatedDevice(cpu="cortex-a72") as dev:
        yield dev
