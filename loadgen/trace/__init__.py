"""Real request traces: streaming readers (Azure 2023/2024, Mooncake, BurstGPT), stats, synthesis and download."""
