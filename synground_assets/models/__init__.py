"""Model code the project writes itself (plain PyTorch), where no library class fits."""
