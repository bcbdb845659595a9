"""Student side of the Text2SQL pipeline: scratch/HF students, torch and mlx trainers, training stages."""
