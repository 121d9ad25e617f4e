from pathlib import Path
from setuptools import setup, find_packages

version = {}
exec((Path(__file__).parent / 'audiolm_pytorch' / 'version.py').read_text(), version)

setup(
    name = 'audiolm-pytorch',
    # the demo's clips ship as package data of the (code-free) audiolm_pytorch.assets package
    packages = find_packages(exclude = ['tests', 'tests.*', 'benchmarks', 'examples', 'scripts']) + ['audiolm_pytorch.assets'],
    package_data = {'audiolm_pytorch.assets': ['*.wav', '*.md']},
    version = version['__version__'],
    license = 'MIT',
    description = 'AudioLM family (SoundStream, semantic/coarse/fine transformers, SoundStorm, MusicLM) in PyTorch',
    long_description = (Path(__file__).parent / 'README.md').read_text(encoding = 'utf-8'),
    long_description_content_type = 'text/markdown',
    python_requires = '>=3.10',
    keywords = ['artificial intelligence', 'deep learning', 'audio generation', 'neural codec', 'transformers'],
    install_requires = [
        'torch>=2.1',
        'einops>=0.7',
        'vector-quantize-pytorch>=1.14',
        'accelerate>=0.25',
        'transformers>=4.40',
        'beartype',
        'soundfile>=0.12',
        'safetensors',
        'tqdm',
        'numpy',
        'julius>=0.2.7',
        'pyyaml',
        'matplotlib',   # `audiolm demo` (the README's first command) draws its spectrogram + loss-curve PNG
    ],
    extras_require = {
        'test': ['pytest', 'scipy', 'matplotlib', 'scikit-learn', 'joblib', 'nbclient', 'nbformat', 'ipykernel', 'tensorboard',
                 'ruff'],
        'plot': ['matplotlib'],   # kept for old install commands: matplotlib is an install requirement now
        'kmeans': ['scikit-learn', 'joblib'],
        'wandb': ['wandb'],
        'eval': ['pesq', 'pystoi'],
        'tensorboard': ['tensorboard'],
    },
    entry_points = {'console_scripts': ['audiolm = audiolm_pytorch.cli:main']},
    classifiers = [
        'Development Status :: 4 - Beta',
        'Intended Audience :: Science/Research',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
        'License :: OSI Approved :: MIT License',
        'Programming Language :: Python :: 3',
    ],
)
