"""Dataset readers and LightningDataModules, one module per dataset format."""

from occaist._lazy import lazy_getattr

__all__ = [
    "BOPDataModule",
    "CarFusionDataModule",
    "ShapeNetRendersDataModule",
    "StanfordCarsDataModule",
    "UnpairedDataModule",
]
__getattr__ = lazy_getattr(
    __name__,
    {
        "ShapeNetRendersDataModule": "occaist.data.shapenet_renders",
        "StanfordCarsDataModule": "occaist.data.stanford_cars",
        "UnpairedDataModule": "occaist.data.unpaired",
        "CarFusionDataModule": "occaist.data.carfusion",
        "BOPDataModule": "occaist.data.bop",
    },
)
