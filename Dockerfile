# cabench on an official PyTorch CUDA image; the image's torch and torchvision satisfy
# the package's requirements, so pip keeps them.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

WORKDIR /opt/cabench
COPY pyproject.toml setup.py README.md constraints.txt ./
COPY cabench ./cabench
COPY suites ./suites
RUN pip install --no-cache-dir -e .

WORKDIR /work
ENTRYPOINT ["cabench"]
CMD ["--help"]
