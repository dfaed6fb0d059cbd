"""The trainer every runner uses: optimizer groups, schedule, accumulation, checkpoints, logging."""
