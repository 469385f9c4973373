from fastapi import APIRouter

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["finetune"])
