"""The VPTT score, image-level metrics (MaSC, FPR, Stellar, CLIP/DINO), the VLM judge and statistics."""
