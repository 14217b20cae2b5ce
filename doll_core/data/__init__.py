"""Reading images, masks and samples: the services that dataset plugins build on."""
