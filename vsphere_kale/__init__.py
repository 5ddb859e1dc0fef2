"""vsphere-kale: Kubeflow and Kale on VMware vSphere with Tanzu."""

__version__ = "0.1.0"
