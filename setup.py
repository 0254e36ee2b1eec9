from setuptools import find_packages, setup

setup(
    name="tvm-patterns",
    version="0.1.0",
    description="Pattern- and block-sparse convolutions for Apache TVM (PatDNN-style compression-compilation co-design)",
    python_requires=">=3.11",
    packages=find_packages(include=["tvm_patterns", "tvm_patterns.*", "schedules", "schedules.*"]),
    # The C++ the emulated aarch64 device is cross-built from (tvm_patterns.devices.emulated_arm.build).
    package_data={"tvm_patterns.devices.emulated_arm": ["cpp/Makefile", "cpp/*.cc", "cpp/**/*.h"]},
    install_requires=[
        "apache-tvm==0.27.0.post1",
        # 0.1.15.x segfaults in tvm.ir.save_json, which MetaSchedule's database needs.
        "apache-tvm-ffi==0.1.14.post1",
        # The CPU build of exactly this version lies on the machine's disk.
        "torch==2.13.0",
        "numpy",
        "xgboost-cpu",   # the CPU build (the "xgboost" wheel pulls a 300 MB NCCL wheel); same version and API
        "scikit-learn",
        "matplotlib",
        "psutil",
        "cloudpickle",
        "tornado",
        "pyopencl",   # runs the generated Mali/Adreno OpenCL kernels on PoCL in the tests
        "pytest",
    ],
    # The engines scripts/bench_peers.py compares against that run in our venv (ExecuTorch and
    # DeepSparse need venvs of their own: bench_peers.py --make-venvs).
    extras_require={"peers": ["onnx", "onnxruntime", "openvino"]},
    entry_points={"console_scripts": ["tvm-patterns=tvm_patterns.apps.cli:main"]},
)
